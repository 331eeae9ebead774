/**
 * A catalog module that mirrors bbsync's catalog into Backstage: a full
 * mutation on start, then delta mutations from bbsync's change feed.
 *
 * @packageDocumentation
 */
export { catalogModuleBbsync as default } from './module';
export { BbsyncEntityProvider } from './providers/BbsyncEntityProvider';
export type { BbsyncProviderConfig } from './providers/config';
export {
  bbsyncPermissionRules,
  bbsyncConditions,
  createBbsyncConditionalDecision,
  isBitbucketReader,
  isBitbucketWriter,
} from './permissions/rules';
export { BbsyncPermissionsClient } from './permissions/BbsyncPermissionsClient';
export type { BbsyncUserRepositories } from './permissions/BbsyncPermissionsClient';
