/**
 * The bbsync backend plugin: reads bbsync's API with the service token, and
 * runs pipelines on behalf of the signed-in user.
 *
 * @packageDocumentation
 */
export { bbsyncPlugin as default } from './plugin';
