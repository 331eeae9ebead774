/*
 * The plugin's dev app (`backstage-cli package start`): the entity page of the
 * component named by `?entity=<ref>` (default component:default/example),
 * read from a real catalog through `/api/catalog`, with bbsync's health card,
 * pull-request tab and pipeline tab. bbsync's browser test drives it against
 * a real Backstage backend, signed in through the guest provider.
 */
import { Entity } from '@backstage/catalog-model';
import { CatalogClient } from '@backstage/catalog-client';
import {
  Content,
  Header,
  Page,
  Progress,
  ResponseErrorPanel,
  TabbedLayout,
} from '@backstage/core-components';
import {
  createApiFactory,
  discoveryApiRef,
  fetchApiRef,
  useApi,
} from '@backstage/core-plugin-api';
import { createDevApp } from '@backstage/dev-utils';
import { catalogApiRef, EntityProvider } from '@backstage/plugin-catalog-react';
import Grid from '@material-ui/core/Grid';
import useAsync from 'react-use/esm/useAsync';
import {
  bbsyncPlugin,
  EntityBbsyncHealthCard,
  EntityBbsyncPipelinesContent,
  EntityBbsyncPullRequestsContent,
  isBbsyncAvailable,
} from '../src';

function EntityPage() {
  const catalogApi = useApi(catalogApiRef);
  const ref =
    new URLSearchParams(window.location.search).get('entity') ??
    'component:default/example';
  const { value, loading, error } = useAsync(
    () => catalogApi.getEntityByRef(ref),
    [catalogApi, ref],
  );
  if (loading) return <Progress />;
  if (error) return <ResponseErrorPanel error={error} />;
  const entity = value as Entity | undefined;
  if (!entity)
    return <ResponseErrorPanel error={new Error(`${ref} not found`)} />;
  return (
    <EntityProvider entity={entity}>
      <Page themeId="service">
        <Header title={entity.metadata.name} subtitle={ref} />
        <Content>
          {isBbsyncAvailable(entity) ? (
            <TabbedLayout>
              <TabbedLayout.Route path="/" title="Overview">
                <Grid container spacing={3}>
                  <Grid item md={8} xs={12}>
                    <EntityBbsyncHealthCard />
                  </Grid>
                </Grid>
              </TabbedLayout.Route>
              <TabbedLayout.Route path="/pull-requests" title="Pull requests">
                <EntityBbsyncPullRequestsContent />
              </TabbedLayout.Route>
              <TabbedLayout.Route path="/pipelines" title="Pipelines">
                <EntityBbsyncPipelinesContent />
              </TabbedLayout.Route>
            </TabbedLayout>
          ) : (
            <p>This entity has no Bitbucket repository.</p>
          )}
        </Content>
      </Page>
    </EntityProvider>
  );
}

createDevApp()
  .registerPlugin(bbsyncPlugin)
  .registerApi(
    createApiFactory({
      api: catalogApiRef,
      deps: { discoveryApi: discoveryApiRef, fetchApi: fetchApiRef },
      factory: deps => new CatalogClient(deps),
    }),
  )
  .addPage({ path: '/entity', title: 'Entity', element: <EntityPage /> })
  .render();
