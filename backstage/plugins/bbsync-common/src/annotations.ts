import { Entity } from '@backstage/catalog-model';

/**
 * The repository an entity comes from: `{workspace}/{slug}` for Bitbucket
 * Cloud, `{KEY}/{slug}` (project key and slug) for Bitbucket Data Center.
 *
 * @public
 */
export const BBSYNC_PROJECT_SLUG_ANNOTATION = 'bitbucket.com/project-slug';
/** The Bitbucket Data Center host (`bitbucket.example.com`, `host:7990`) of a Data Center entity. @public */
export const BBSYNC_SERVER_ANNOTATION = 'bbsync.io/bitbucket-server';
/** The Bitbucket account id of a User entity. @public */
export const BBSYNC_USER_ID_ANNOTATION = 'bitbucket.org/user-id';
/** The repository's web URL. @public */
export const BBSYNC_REPO_URL_ANNOTATION = 'bitbucket.org/repo-url';

/** A Bitbucket name (Cloud workspace, repository slug): no `.` or `..` alone. */
const NAME = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;
/** A host name label. */
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/**
 * A Data Center project key as bbsync keys it (upper case; a personal project
 * `~USER`), the pattern of bbsync's `workspace` URL converter.
 */
const PROJECT_KEY = /^~?[A-Z_][A-Z0-9_]{0,127}$/;

/**
 * True for a Data Center host as `bbsync.io/bitbucket-server` names it: DNS
 * labels separated by dots, then an optional `:port`.
 *
 * @public
 */
export function isBbsyncServerHost(host: string): boolean {
  const match = host.match(/^([^:]{1,253})(?::(\d{1,5}))?$/);
  if (!match) {
    return false;
  }
  if (match[2] !== undefined) {
    const port = Number(match[2]);
    if (port < 1 || port > 65535) {
      return false;
    }
  }
  return match[1].split('.').every(label => LABEL.test(label));
}

/** True for a Bitbucket name: a Cloud workspace or a repository slug. @public */
export function isBbsyncName(name: string): boolean {
  return NAME.test(name);
}

/**
 * A bbsync workspace taken apart: a Cloud workspace, or a Data Center project
 * `{host}/{KEY}`; undefined when it is neither (strictly: host characters,
 * the project key pattern, no `.`/`..` segments).
 *
 * @public
 */
export function parseBbsyncWorkspace(
  workspace: string,
):
  | { kind: 'cloud'; workspace: string }
  | { kind: 'datacenter'; workspace: string; host: string; projectKey: string }
  | undefined {
  const parts = workspace.split('/');
  if (parts.length === 1) {
    return NAME.test(workspace) ? { kind: 'cloud', workspace } : undefined;
  }
  const [host, projectKey] = parts;
  if (
    parts.length === 2 &&
    isBbsyncServerHost(host) &&
    PROJECT_KEY.test(projectKey)
  ) {
    return { kind: 'datacenter', workspace, host, projectKey };
  }
  return undefined;
}

/**
 * A repository as bbsync names it: its workspace (a Cloud workspace, or
 * `{host}/{KEY}` for a Data Center project) and its slug. `server` is the
 * Data Center host, set only for a Data Center repository.
 *
 * @public
 */
export interface BbsyncRepositoryName {
  workspace: string;
  slug: string;
  server?: string;
}

/**
 * The bbsync repository an entity comes from, or undefined when it names
 * none (or a malformed one). A Cloud entity's `bitbucket.com/project-slug` is
 * `{workspace}/{slug}`; a Data Center entity also has
 * `bbsync.io/bitbucket-server: {host}` and its project slug is `{KEY}/{slug}`,
 * so its bbsync workspace is `{host}/{KEY}`.
 *
 * @public
 */
export function getBbsyncRepository(
  entity: Entity,
): BbsyncRepositoryName | undefined {
  const annotations = entity.metadata.annotations ?? {};
  const value = annotations[BBSYNC_PROJECT_SLUG_ANNOTATION]?.trim();
  const match = value?.match(/^([^/\s]+)\/([^/\s]+)$/);
  if (!match || !NAME.test(match[2])) {
    return undefined;
  }
  const [, owner, slug] = match;
  const server = annotations[BBSYNC_SERVER_ANNOTATION]?.trim().toLowerCase();
  if (!server) {
    return NAME.test(owner) ? { workspace: owner, slug } : undefined;
  }
  // Data Center project keys are upper case; bbsync keys its workspaces so.
  const key = owner.toUpperCase();
  if (!isBbsyncServerHost(server) || !PROJECT_KEY.test(key)) {
    return undefined;
  }
  return { workspace: `${server}/${key}`, slug, server };
}

/** Why a Data Center repository has no Run pipeline, in words for the user. @public */
export const BBSYNC_NO_DATA_CENTER_PIPELINES = 'Data Center has no Pipelines';

/**
 * True when the entity's repository is on Bitbucket Data Center (which has no
 * Pipelines).
 *
 * @public
 */
export function isBbsyncDataCenter(entity: Entity): boolean {
  return getBbsyncRepository(entity)?.server !== undefined;
}
