import { mockServices } from '@backstage/backend-test-utils';
import { Entity } from '@backstage/catalog-model';
import {
  EntityProviderConnection,
  EntityProviderMutation,
} from '@backstage/plugin-catalog-node';
import { ChangeFeedServer, component } from '../__testUtils__/changeFeedServer';
import { BbsyncEntityProvider } from './BbsyncEntityProvider';

describe('BbsyncEntityProvider', () => {
  let feed: ChangeFeedServer;
  let mutations: EntityProviderMutation[];
  let connection: EntityProviderConnection;

  beforeEach(async () => {
    feed = await ChangeFeedServer.start('svc-token');
    mutations = [];
    connection = {
      applyMutation: async m => {
        mutations.push(m);
      },
      refresh: jest.fn(),
    };
  });

  afterEach(async () => {
    await feed.stop();
  });

  function provider(token = 'svc-token', pageSize = 2) {
    const config = mockServices.rootConfig({
      data: {
        catalog: {
          providers: { bbsync: { baseUrl: feed.baseUrl, token, pageSize } },
        },
      },
    });
    const p = BbsyncEntityProvider.fromConfig(config, {
      logger: mockServices.logger.mock(),
      scheduler: mockServices.scheduler.mock(),
    })!;
    return p;
  }

  function names(entities: { entity: Entity }[]) {
    return entities.map(e => e.entity.metadata.name).sort();
  }

  function fullEntities(m: EntityProviderMutation) {
    if (m.type !== 'full') {
      throw new Error(`expected a full mutation, got ${m.type}`);
    }
    return m.entities;
  }

  function delta(m: EntityProviderMutation) {
    if (m.type !== 'delta') {
      throw new Error(`expected a delta mutation, got ${m.type}`);
    }
    return m;
  }

  it('applies a full mutation of every entity, paging the feed from 0', async () => {
    feed.add(component('a'), component('b'), component('c'));
    feed.remove('component:default/b');
    const p = provider();
    await p.connect(connection);
    await p.refresh();

    expect(mutations).toHaveLength(1);
    expect(names(fullEntities(mutations[0]))).toEqual(['a', 'c']);
    expect(feed.requests.map(r => r.since)).toEqual(['0', '2']);
    expect(feed.requests.every(r => r.limit === '2')).toBe(true);
  });

  it('sets the managed-by annotations only where bbsync left them out', async () => {
    const own = component('own');
    own.metadata.annotations = {
      'backstage.io/managed-by-location':
        'url:https://bitbucket.org/w/r/src/main/catalog-info.yaml',
      'backstage.io/managed-by-origin-location':
        'url:https://bitbucket.org/w/r/src/main/catalog-info.yaml',
    };
    feed.add(own, component('bare'));
    const p = provider();
    await p.connect(connection);
    await p.refresh();

    const byName = Object.fromEntries(
      fullEntities(mutations[0]).map(e => [
        e.entity.metadata.name,
        e.entity.metadata.annotations,
      ]),
    );
    expect(byName.own!['backstage.io/managed-by-location']).toBe(
      'url:https://bitbucket.org/w/r/src/main/catalog-info.yaml',
    );
    expect(byName.bare!['backstage.io/managed-by-location']).toBe(
      `url:${feed.baseUrl}/catalog/entities.yaml`,
    );
    expect(byName.bare!['backstage.io/managed-by-origin-location']).toBe(
      `url:${feed.baseUrl}/catalog/entities.yaml`,
    );
  });

  it('applies later changes as delta mutations from the cursor', async () => {
    feed.add(component('a'), component('b'));
    const p = provider();
    await p.connect(connection);
    await p.refresh();
    feed.requests.length = 0;

    feed.add(component('c'));
    feed.remove('component:default/a');
    await p.refresh();

    expect(feed.requests.map(r => r.since)).toEqual(['2']);
    expect(mutations).toHaveLength(2);
    const change = delta(mutations[1]);
    expect(names(change.added)).toEqual(['c']);
    expect(change.removed).toEqual([
      {
        entityRef: 'component:default/a',
        locationKey: `bbsync-provider:${feed.baseUrl}`,
      },
    ]);

    await p.refresh();
    expect(mutations).toHaveLength(2);
  });

  it('recovers from an expired cursor (410) with a full mutation', async () => {
    feed.add(component('a'));
    const p = provider();
    await p.connect(connection);
    await p.refresh();

    feed.add(component('b'));
    feed.expireBefore(2);
    await p.refresh();

    expect(mutations.map(m => m.type)).toEqual(['full', 'full']);
    expect(names(fullEntities(mutations[1]))).toEqual(['a', 'b']);

    feed.add(component('c'));
    await p.refresh();
    expect(mutations.map(m => m.type)).toEqual(['full', 'full', 'delta']);
  });

  it('logs a refused token and tries again on the next run', async () => {
    feed.add(component('a'));
    const logger = mockServices.logger.mock();
    const config = mockServices.rootConfig({
      data: {
        catalog: {
          providers: { bbsync: { baseUrl: feed.baseUrl, token: 'wrong' } },
        },
      },
    });
    const p = BbsyncEntityProvider.fromConfig(config, {
      logger,
      scheduler: mockServices.scheduler.mock(),
    })!;
    await p.connect(connection);
    await p.refresh();

    expect(mutations).toHaveLength(0);
    expect(logger.error).toHaveBeenCalledWith(
      'bbsync change feed refused the token',
      expect.objectContaining({ reason: expect.stringContaining('401') }),
    );

    feed.token = 'wrong';
    await p.refresh();
    expect(mutations.map(m => m.type)).toEqual(['full']);
  });

  it('propagates server errors so the scheduler reports them', async () => {
    feed.failWith = 503;
    const p = provider();
    await p.connect(connection);
    await expect(p.refresh()).rejects.toThrow('HTTP 503');
    expect(mutations).toHaveLength(0);
  });

  it('is not created without catalog.providers.bbsync', () => {
    expect(
      BbsyncEntityProvider.fromConfig(mockServices.rootConfig({ data: {} }), {
        logger: mockServices.logger.mock(),
        scheduler: mockServices.scheduler.mock(),
      }),
    ).toBeUndefined();
  });
});
