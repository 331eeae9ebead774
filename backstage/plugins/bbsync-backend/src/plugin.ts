import {
  coreServices,
  createBackendPlugin,
} from '@backstage/backend-plugin-api';
import { catalogServiceRef } from '@backstage/plugin-catalog-node';
import { BbsyncApi } from './service/BbsyncApi';
import { createRouter } from './service/router';

/**
 * Serves `/api/bbsync`: health, pull requests and pipelines of a repository,
 * whether the signed-in user may run pipelines, and the run itself.
 *
 * @public
 */
export const bbsyncPlugin = createBackendPlugin({
  pluginId: 'bbsync',
  register(env) {
    env.registerInit({
      deps: {
        config: coreServices.rootConfig,
        logger: coreServices.logger,
        httpAuth: coreServices.httpAuth,
        httpRouter: coreServices.httpRouter,
        auth: coreServices.auth,
        catalog: catalogServiceRef,
      },
      async init({ config, logger, httpAuth, httpRouter, auth, catalog }) {
        const bbsync = BbsyncApi.fromConfig(config);
        httpRouter.use(
          await createRouter({ bbsync, httpAuth, auth, catalog, logger }),
        );
      },
    });
  },
});
