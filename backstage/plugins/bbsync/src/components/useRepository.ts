import { useEntity } from '@backstage/plugin-catalog-react';
import {
  BBSYNC_REPO_URL_ANNOTATION,
  getBbsyncRepository,
} from '@bbsync/plugin-bbsync-common';
import { BbsyncRepositoryRef } from '../api';

/** The current entity's repository, or undefined when it names none. */
export function useRepository(): BbsyncRepositoryRef | undefined {
  const { entity } = useEntity();
  return getBbsyncRepository(entity);
}

/** "3 h" / "2 d": how long ago (or how long) in the largest whole unit. */
export function age(seconds: number): string {
  const units: [number, string][] = [
    [86400, 'd'],
    [3600, 'h'],
    [60, 'min'],
  ];
  for (const [size, unit] of units) {
    if (seconds >= size) {
      return `${Math.floor(seconds / size)} ${unit}`;
    }
  }
  return `${Math.max(0, Math.floor(seconds))} s`;
}

/** Seconds from an ISO time to now. */
export function secondsSince(iso?: string | null): number | undefined {
  if (!iso) {
    return undefined;
  }
  return (Date.now() - new Date(iso).getTime()) / 1000;
}

/** The repository's Bitbucket web URL, from `bitbucket.org/repo-url` when present. */
export function useRepositoryWebUrl(): string | undefined {
  const { entity } = useEntity();
  const repo = getBbsyncRepository(entity);
  const annotated = entity.metadata.annotations?.[BBSYNC_REPO_URL_ANNOTATION];
  if (annotated && /^https?:\/\//.test(annotated)) {
    return annotated.replace(/\/+$/, '');
  }
  return repo
    ? `https://bitbucket.org/${repo.workspace}/${repo.slug}`
    : undefined;
}
