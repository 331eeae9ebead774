/*
 * A stock Backstage backend with the catalog, bbsync's provider module and
 * backend plugin, and the auth backend with the guest provider, as an adopter
 * would set it up; bbsync's end-to-end and browser tests start it with
 * `backstage-cli package start --config <file>`.
 */
import { createBackend } from '@backstage/backend-defaults';

const backend = createBackend();
backend.add(import('@backstage/plugin-auth-backend'));
backend.add(import('@backstage/plugin-auth-backend-module-guest-provider'));
backend.add(import('@backstage/plugin-catalog-backend'));
backend.add(import('@bbsync/plugin-catalog-backend-module-bbsync'));
backend.add(import('@bbsync/plugin-bbsync-backend'));
backend.start();
