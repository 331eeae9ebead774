import { Entity } from '@backstage/catalog-model';
import { EntityProvider } from '@backstage/plugin-catalog-react';
import { TestApiProvider } from '@backstage/test-utils';
import { ReactNode } from 'react';
import { BbsyncApi, bbsyncApiRef } from '../api';

export const entity: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'repo',
    annotations: { 'bitbucket.com/project-slug': 'ws/repo' },
  },
  spec: { type: 'service', lifecycle: 'production', owner: 'team-a' },
};

/** A Component from a Bitbucket Data Center repository, as bbsync builds it. */
export const dataCenterEntity: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'plat-api',
    namespace: 'bitbucket-example-com',
    annotations: {
      'bitbucket.com/project-slug': 'PLAT/api',
      'bbsync.io/bitbucket-server': 'bitbucket.example.com',
      'backstage.io/source-location':
        'url:https://bitbucket.example.com/projects/PLAT/repos/api/browse/',
    },
  },
  spec: { type: 'service', lifecycle: 'production', owner: 'team-a' },
};

/** An API whose every call fails unless a test gives it an answer. */
export function fakeApi(overrides: Partial<BbsyncApi> = {}): BbsyncApi {
  const missing = (name: string) => () =>
    Promise.reject(new Error(`${name} not expected`));
  return {
    getRepository: missing('getRepository'),
    getHealth: missing('getHealth'),
    getPullRequests: missing('getPullRequests'),
    getPipelines: missing('getPipelines'),
    getWriteAccess: missing('getWriteAccess'),
    runPipeline: missing('runPipeline'),
    ...overrides,
  };
}

/** A promise that never settles: the loading state. */
export const pending = <T,>() => new Promise<T>(() => {});

export function Wrapper(props: {
  api: BbsyncApi;
  children: ReactNode;
  entity?: Entity;
}) {
  return (
    <TestApiProvider apis={[[bbsyncApiRef, props.api]]}>
      <EntityProvider entity={props.entity ?? entity}>
        {props.children}
      </EntityProvider>
    </TestApiProvider>
  );
}
