import { Entity } from '@backstage/catalog-model';
import { BBSYNC_PROJECT_SLUG_ANNOTATION } from '@bbsync/plugin-bbsync-common';

/**
 * True when the entity names its Bitbucket repository
 * (`bitbucket.com/project-slug`), for conditional entity-page content.
 *
 * @public
 */
export function isBbsyncAvailable(entity: Entity): boolean {
  return Boolean(entity.metadata.annotations?.[BBSYNC_PROJECT_SLUG_ANNOTATION]);
}
