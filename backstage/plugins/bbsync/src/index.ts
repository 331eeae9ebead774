/**
 * bbsync's entity-page plugin: health card, pull requests, pipelines and
 * Run pipeline, read through the bbsync backend plugin.
 *
 * @packageDocumentation
 */
export {
  bbsyncPlugin,
  EntityBbsyncHealthCard,
  EntityBbsyncPipelinesContent,
  EntityBbsyncPullRequestsContent,
} from './plugin';
export { RunPipelineButton } from './components/RunPipelineButton';
export type { RunPipelineButtonProps } from './components/RunPipelineButton';
export { bbsyncApiRef, BbsyncClient } from './api';
export type { BbsyncApi, BbsyncRepository, BbsyncRepositoryRef } from './api';
export { isBbsyncAvailable, isBbsyncPipelinesAvailable } from './conditions';
