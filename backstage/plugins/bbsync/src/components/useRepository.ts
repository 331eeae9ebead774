import { useEntity } from '@backstage/plugin-catalog-react';
import {
  BBSYNC_REPO_URL_ANNOTATION,
  getBbsyncRepository,
} from '@bbsync/plugin-bbsync-common';
import { useMemo } from 'react';
import { BbsyncRepositoryRef } from '../api';

/** The current entity's repository, or undefined when it names none. */
export function useRepository(): BbsyncRepositoryRef | undefined {
  const { entity } = useEntity();
  return useMemo(() => getBbsyncRepository(entity), [entity]);
}

/** True for a Data Center repository (workspace `{host}/{KEY}`), which has no Pipelines. */
export function isDataCenter(repo: BbsyncRepositoryRef): boolean {
  return repo.server !== undefined || repo.workspace.includes('/');
}

const SOURCE_LOCATION = 'backstage.io/source-location';

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

/**
 * The repository's Bitbucket web URL, from `bitbucket.org/repo-url` when
 * present. A Data Center repository's is `…/projects/{KEY}/repos/{slug}`, with
 * the scheme (and any context path) of its `backstage.io/source-location`.
 */
export function useRepositoryWebUrl(): string | undefined {
  const { entity } = useEntity();
  const repo = getBbsyncRepository(entity);
  const annotations = entity.metadata.annotations ?? {};
  const annotated = annotations[BBSYNC_REPO_URL_ANNOTATION];
  if (annotated && /^https?:\/\//.test(annotated)) {
    return annotated.replace(/\/+$/, '');
  }
  if (!repo) {
    return undefined;
  }
  if (!repo.server) {
    return `https://bitbucket.org/${repo.workspace}/${repo.slug}`;
  }
  const key = repo.workspace.slice(repo.server.length + 1);
  const path = `/projects/${encodeURIComponent(key)}/repos/${encodeURIComponent(repo.slug)}`;
  const source = annotations[SOURCE_LOCATION]?.match(
    /^url:(https?):\/\/([^/?#]+)(\/[^?#]*?)?\/projects\/([^/?#]+)\/repos\/([^/?#]+)(?:[/?#]|$)/i,
  );
  if (source && source[2].toLowerCase() === repo.server) {
    return `${source[1]}://${source[2]}${source[3] ?? ''}${path}`;
  }
  return `https://${repo.server}${path}`;
}
