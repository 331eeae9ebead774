import { Entity } from '@backstage/catalog-model';
import { EntitiesSearchFilter } from '@backstage/plugin-catalog-node';
import {
  createConditionExports,
  createPermissionRule,
} from '@backstage/plugin-permission-node';
import { catalogEntityPermissionResourceRef } from '@backstage/plugin-catalog-node/alpha';
import {
  BBSYNC_PROJECT_SLUG_ANNOTATION,
  BBSYNC_SERVER_ANNOTATION,
  getBbsyncRepository,
} from '@bbsync/plugin-bbsync-common';
import { z } from 'zod';

const SLUG_KEY = `metadata.annotations.${BBSYNC_PROJECT_SLUG_ANNOTATION}`;
const SERVER_KEY = `metadata.annotations.${BBSYNC_SERVER_ANNOTATION}`;

const paramsSchema = z.object({
  repositories: z
    .array(z.string())
    .describe(
      '`{workspace}/{slug}` of the repositories the user may access (`{host}/{KEY}/{slug}` for Bitbucket Data Center)',
    ),
});

function fromRepositories(entity: Entity, repositories: string[]): boolean {
  const repo = getBbsyncRepository(entity);
  if (!repo) {
    return false;
  }
  const name = `${repo.workspace}/${repo.slug}`.toLowerCase();
  return repositories.some(r => r.toLowerCase() === name);
}

/** A catalog query: PermissionCriteria<EntitiesSearchFilter>. */
type Criteria =
  | EntitiesSearchFilter
  | { allOf: [Criteria, ...Criteria[]] }
  | { anyOf: [Criteria, ...Criteria[]] }
  | { not: Criteria };

/**
 * The catalog filter of the same repositories: a Cloud repository
 * `{workspace}/{slug}` is an entity with that project slug and no
 * `bbsync.io/bitbucket-server`; a Data Center repository `{host}/{KEY}/{slug}`
 * one with the project slug `{KEY}/{slug}` and that server. So a Data Center
 * `PLAT/api` never matches Cloud's `plat/api`, nor another server's.
 */
function repositoriesQuery(repositories: string[]): Criteria {
  const cloud: string[] = [];
  const servers = new Map<string, string[]>();
  for (const repository of repositories) {
    const parts = repository.split('/');
    if (parts.length === 2) {
      cloud.push(repository);
    } else if (parts.length === 3) {
      const host = parts[0].toLowerCase();
      servers.set(host, [
        ...(servers.get(host) ?? []),
        `${parts[1]}/${parts[2]}`,
      ]);
    }
  }
  const criteria: Criteria[] = [];
  if (cloud.length) {
    criteria.push({
      allOf: [{ key: SLUG_KEY, values: cloud }, { not: { key: SERVER_KEY } }],
    });
  }
  for (const [host, slugs] of servers) {
    criteria.push({
      allOf: [
        { key: SLUG_KEY, values: slugs },
        { key: SERVER_KEY, values: [host] },
      ],
    });
  }
  const [first, ...rest] = criteria;
  if (!first) {
    // Matches nothing.
    return { key: SLUG_KEY, values: [] };
  }
  return rest.length ? { anyOf: [first, ...rest] } : first;
}

/**
 * Entities from a Bitbucket repository the user may read. The repositories
 * come from bbsync's mirrored permissions ({@link BbsyncPermissionsClient});
 * the policy passes them in.
 *
 * @public
 */
export const isBitbucketReader = createPermissionRule({
  name: 'IS_BITBUCKET_READER',
  description:
    'Allow entities from Bitbucket repositories the user may read (bbsync mirrors the permissions)',
  resourceRef: catalogEntityPermissionResourceRef,
  paramsSchema,
  apply: (entity, { repositories }) => fromRepositories(entity, repositories),
  toQuery: ({ repositories }) => repositoriesQuery(repositories),
});

/**
 * Entities from a Bitbucket repository the user may write to (write or admin).
 *
 * @public
 */
export const isBitbucketWriter = createPermissionRule({
  name: 'IS_BITBUCKET_WRITER',
  description:
    'Allow entities from Bitbucket repositories the user may write to (bbsync mirrors the permissions)',
  resourceRef: catalogEntityPermissionResourceRef,
  paramsSchema,
  apply: (entity, { repositories }) => fromRepositories(entity, repositories),
  toQuery: ({ repositories }) => repositoriesQuery(repositories),
});

/** The rules the module registers with the catalog. @public */
export const bbsyncPermissionRules = [isBitbucketReader, isBitbucketWriter];

const exported = createConditionExports({
  resourceRef: catalogEntityPermissionResourceRef,
  rules: { isBitbucketReader, isBitbucketWriter },
});

/** Conditions for a permission policy. @public */
export const bbsyncConditions = exported.conditions;

/** Wraps bbsync conditions for a catalog entity permission. @public */
export const createBbsyncConditionalDecision =
  exported.createConditionalDecision;
