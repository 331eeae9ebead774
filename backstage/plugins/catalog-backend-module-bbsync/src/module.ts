import {
  coreServices,
  createBackendModule,
} from '@backstage/backend-plugin-api';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { BbsyncEntityProvider } from './providers/BbsyncEntityProvider';
import { bbsyncPermissionRules } from './permissions/rules';

/**
 * Registers {@link BbsyncEntityProvider} (when `catalog.providers.bbsync` is
 * configured) and the `isBitbucketReader` / `isBitbucketWriter` permission
 * rules with the catalog.
 *
 * @public
 */
export const catalogModuleBbsync = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'bbsync',
  register(env) {
    env.registerInit({
      deps: {
        config: coreServices.rootConfig,
        logger: coreServices.logger,
        scheduler: coreServices.scheduler,
        permissionsRegistry: coreServices.permissionsRegistry,
        catalog: catalogProcessingExtensionPoint,
      },
      async init({ config, logger, scheduler, permissionsRegistry, catalog }) {
        permissionsRegistry.addPermissionRules(bbsyncPermissionRules);
        const provider = BbsyncEntityProvider.fromConfig(config, {
          logger,
          scheduler,
        });
        if (!provider) {
          logger.warn(
            'bbsync provider not started: catalog.providers.bbsync is not configured',
          );
          return;
        }
        catalog.addEntityProvider(provider);
      },
    });
  },
});
