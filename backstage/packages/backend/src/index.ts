/*
 * A stock Backstage backend with the catalog and bbsync's provider module, as
 * an adopter would set it up; bbsync's end-to-end test starts it with
 * `backstage-cli package start --config <file>`.
 */
import { createBackend } from '@backstage/backend-defaults';

const backend = createBackend();
backend.add(import('@backstage/plugin-catalog-backend'));
backend.add(import('@bbsync/plugin-catalog-backend-module-bbsync'));
backend.start();
