import { Entity } from '@backstage/catalog-model';

/** `{workspace}/{slug}` of the Bitbucket repository an entity comes from. @public */
export const BBSYNC_PROJECT_SLUG_ANNOTATION = 'bitbucket.com/project-slug';
/** The Bitbucket account id of a User entity. @public */
export const BBSYNC_USER_ID_ANNOTATION = 'bitbucket.org/user-id';
/** The repository's web URL. @public */
export const BBSYNC_REPO_URL_ANNOTATION = 'bitbucket.org/repo-url';

/**
 * The `{ workspace, slug }` named by an entity's `bitbucket.com/project-slug`
 * annotation, or undefined when it has none (or a malformed one).
 *
 * @public
 */
export function getBbsyncRepository(
  entity: Entity,
): { workspace: string; slug: string } | undefined {
  const value =
    entity.metadata.annotations?.[BBSYNC_PROJECT_SLUG_ANNOTATION]?.trim();
  const match = value?.match(/^([^/\s]+)\/([^/\s]+)$/);
  return match ? { workspace: match[1], slug: match[2] } : undefined;
}
