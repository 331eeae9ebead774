import { Entity } from '@backstage/catalog-model';
import {
  createConditionExports,
  createPermissionRule,
} from '@backstage/plugin-permission-node';
import { catalogEntityPermissionResourceRef } from '@backstage/plugin-catalog-node/alpha';
import { BBSYNC_PROJECT_SLUG_ANNOTATION } from '@bbsync/plugin-bbsync-common';
import { z } from 'zod';

const ANNOTATION_KEY = `metadata.annotations.${BBSYNC_PROJECT_SLUG_ANNOTATION}`;

const paramsSchema = z.object({
  repositories: z
    .array(z.string())
    .describe('`{workspace}/{slug}` of the repositories the user may access'),
});

function fromRepositories(entity: Entity, repositories: string[]): boolean {
  const slug = entity.metadata.annotations?.[BBSYNC_PROJECT_SLUG_ANNOTATION];
  return (
    slug !== undefined &&
    repositories.some(r => r.toLowerCase() === slug.toLowerCase())
  );
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
  toQuery: ({ repositories }) => ({
    key: ANNOTATION_KEY,
    values: repositories,
  }),
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
  toQuery: ({ repositories }) => ({
    key: ANNOTATION_KEY,
    values: repositories,
  }),
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
