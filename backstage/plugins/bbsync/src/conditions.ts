import { Entity } from '@backstage/catalog-model';
import {
  BBSYNC_PROJECT_SLUG_ANNOTATION,
  isBbsyncDataCenter,
} from '@bbsync/plugin-bbsync-common';

/**
 * True when the entity names its Bitbucket repository
 * (`bitbucket.com/project-slug`), for conditional entity-page content.
 *
 * @public
 */
export function isBbsyncAvailable(entity: Entity): boolean {
  return Boolean(entity.metadata.annotations?.[BBSYNC_PROJECT_SLUG_ANNOTATION]);
}

/**
 * True when the entity's repository can have Bitbucket Pipelines: a Cloud
 * repository (Data Center has no Pipelines), for a conditional Pipelines tab.
 *
 * @public
 */
export function isBbsyncPipelinesAvailable(entity: Entity): boolean {
  return isBbsyncAvailable(entity) && !isBbsyncDataCenter(entity);
}
