import {
  createApiFactory,
  createComponentExtension,
  createPlugin,
  discoveryApiRef,
  fetchApiRef,
} from '@backstage/core-plugin-api';
import { bbsyncApiRef, BbsyncClient } from './api';

/** The bbsync entity-page plugin. @public */
export const bbsyncPlugin = createPlugin({
  id: 'bbsync',
  apis: [
    createApiFactory({
      api: bbsyncApiRef,
      deps: { discoveryApi: discoveryApiRef, fetchApi: fetchApiRef },
      factory: deps => new BbsyncClient(deps),
    }),
  ],
});

/** Default-branch build state, last pipelines and open pull requests. @public */
export const EntityBbsyncHealthCard = bbsyncPlugin.provide(
  createComponentExtension({
    name: 'EntityBbsyncHealthCard',
    component: {
      lazy: () => import('./components/HealthCard').then(m => m.HealthCard),
    },
  }),
);

/** A table of the repository's pull requests. @public */
export const EntityBbsyncPullRequestsContent = bbsyncPlugin.provide(
  createComponentExtension({
    name: 'EntityBbsyncPullRequestsContent',
    component: {
      lazy: () =>
        import('./components/PullRequestsContent').then(
          m => m.PullRequestsContent,
        ),
    },
  }),
);

/** A table of the repository's recent pipelines, with Run pipeline. @public */
export const EntityBbsyncPipelinesContent = bbsyncPlugin.provide(
  createComponentExtension({
    name: 'EntityBbsyncPipelinesContent',
    component: {
      lazy: () =>
        import('./components/PipelinesContent').then(m => m.PipelinesContent),
    },
  }),
);
