import {
  mockCredentials,
  mockServices,
  startTestBackend,
} from '@backstage/backend-test-utils';
import { Entity } from '@backstage/catalog-model';
import { catalogServiceMock } from '@backstage/plugin-catalog-node/testUtils';
import { createServer, IncomingMessage, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import request from 'supertest';
import { bbsyncPlugin } from '../plugin';

type Seen = {
  method: string;
  url: string;
  authorization?: string;
  body: string;
};

/** A stand-in for bbsync's JSON API on a real local port. */
async function fakeBbsync(): Promise<{
  server: Server;
  url: string;
  seen: Seen[];
}> {
  const seen: Seen[] = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    seen.push({
      method: req.method!,
      url: req.url!,
      authorization: req.headers.authorization,
      body,
    });
    const reply = (status: number, data: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(data));
    };
    const url = new URL(req.url!, 'http://bbsync');
    if (
      req.method === 'POST' &&
      url.pathname === '/api/repositories/ws/repo/pipelines'
    ) {
      if (req.headers.authorization === 'Bearer svc') {
        reply(401, {
          error: 'unauthorized',
          message: 'a service token cannot run pipelines',
        });
        return;
      }
      reply(201, { uuid: '{p-7}', build_number: 7, state: 'PENDING' });
      return;
    }
    if (req.headers.authorization !== 'Bearer svc') {
      reply(401, { error: 'unauthorized', message: 'bad token' });
      return;
    }
    if (
      url.pathname === '/api/repositories/bitbucket.example.com/PLAT/api/health'
    ) {
      reply(200, {
        repository: 'bitbucket.example.com/PLAT/api',
        open_pull_requests: 1,
        builds_on_head: [{ key: 'ci', state: 'SUCCESSFUL' }],
        pipeline_runs: 0,
      });
    } else if (
      url.pathname.startsWith('/api/repositories/bitbucket.example.com')
    ) {
      reply(200, { items: [], next_offset: null });
    } else if (url.pathname === '/api/repositories/ws/repo/health') {
      reply(200, {
        repository: 'ws/repo',
        open_pull_requests: 2,
        builds_on_head: [],
        pipeline_runs: 0,
      });
    } else if (url.pathname === '/api/repositories/ws/repo/pullrequests') {
      reply(200, {
        items: [{ id: 1, title: 'Fix', state: 'OPEN' }],
        next_offset: null,
      });
    } else if (url.pathname === '/api/permissions') {
      const user = url.searchParams.get('user');
      if (user === 'acc-writer') {
        reply(200, {
          user,
          groups: [],
          items: [
            {
              repository: 'ws/repo',
              principal_type: 'user',
              principal: user,
              permission: 'write',
            },
          ],
        });
      } else if (user === 'acc-reader') {
        reply(200, {
          user,
          groups: [],
          items: [
            {
              repository: 'ws/repo',
              principal_type: 'user',
              principal: user,
              permission: 'read',
            },
          ],
        });
      } else {
        reply(404, {
          error: 'not_found',
          message: `no current member '${user}'`,
        });
      }
    } else {
      reply(404, {
        error: 'not_found',
        message: 'repository ws/gone is not known to bbsync',
      });
    }
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}`, seen };
}

const user = (name: string, account?: string): Entity => ({
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'User',
  metadata: {
    name,
    annotations: account ? { 'bitbucket.org/user-id': account } : {},
  },
  spec: {},
});

describe('bbsync backend plugin', () => {
  let bbsync: Awaited<ReturnType<typeof fakeBbsync>>;
  let app: Awaited<ReturnType<typeof startTestBackend>>['server'];

  beforeEach(async () => {
    bbsync = await fakeBbsync();
    const backend = await startTestBackend({
      features: [
        bbsyncPlugin,
        mockServices.rootConfig.factory({
          data: { bbsync: { baseUrl: bbsync.url, token: 'svc' } },
        }),
        catalogServiceMock.factory({
          entities: [
            user('writer', 'acc-writer'),
            user('reader', 'acc-reader'),
            user('stranger'),
          ],
        }),
      ],
    });
    app = backend.server;
  });

  afterEach(async () => {
    await new Promise(resolve => bbsync.server.close(resolve));
  });

  const as = (name: string) =>
    mockCredentials.user.header(`user:default/${name}`);

  it("reads bbsync with the service token, never the caller's", async () => {
    const res = await request(app)
      .get('/api/bbsync/repositories/ws/repo/health')
      .set('Authorization', as('reader'));
    expect(res.status).toBe(200);
    expect(res.body.open_pull_requests).toBe(2);
    expect(bbsync.seen[0].authorization).toBe('Bearer svc');
  });

  it('passes on only the known list parameters', async () => {
    const res = await request(app)
      .get(
        '/api/bbsync/repositories/ws/repo/pullrequests?state=OPEN&state=MERGED&limit=5&evil=1',
      )
      .set('Authorization', as('reader'));
    expect(res.status).toBe(200);
    expect(res.body.items[0].title).toBe('Fix');
    expect(bbsync.seen[0].url).toBe(
      '/api/repositories/ws/repo/pullrequests?state=OPEN&state=MERGED&limit=5',
    );
  });

  it("answers bbsync's 404 as a Backstage NotFoundError", async () => {
    const res = await request(app)
      .get('/api/bbsync/repositories/ws/gone/pipelines')
      .set('Authorization', as('reader'));
    expect(res.status).toBe(404);
    expect(res.body.error.name).toBe('NotFoundError');
    expect(res.body.error.message).toContain('ws/gone');
  });

  it('refuses names that are not Bitbucket names', async () => {
    const res = await request(app)
      .get('/api/bbsync/repositories/ws/re%2F..%2Fpo/health')
      .set('Authorization', as('reader'));
    expect(res.status).toBe(400);
    expect(bbsync.seen).toHaveLength(0);
  });

  it('refuses callers without credentials', async () => {
    const res = await request(app)
      .get('/api/bbsync/repositories/ws/repo/health')
      .set('Authorization', mockCredentials.none.header());
    expect(res.status).toBe(401);
  });

  it('tells writers they may run pipelines', async () => {
    const res = await request(app)
      .get('/api/bbsync/repositories/ws/repo/access')
      .set('Authorization', as('writer'));
    expect(res.body).toEqual({ canWrite: true });
    expect(bbsync.seen[0].url).toBe('/api/permissions?user=acc-writer');
  });

  it('tells readers and unmapped users why they may not', async () => {
    const reader = await request(app)
      .get('/api/bbsync/repositories/ws/repo/access')
      .set('Authorization', as('reader'));
    expect(reader.body.canWrite).toBe(false);
    expect(reader.body.reason).toContain('no write access to ws/repo');

    const stranger = await request(app)
      .get('/api/bbsync/repositories/ws/repo/access')
      .set('Authorization', as('stranger'));
    expect(stranger.body.canWrite).toBe(false);
    expect(stranger.body.reason).toContain('bitbucket.org/user-id');
  });

  it("runs a pipeline with the user's own token and links to it", async () => {
    const header = as('writer');
    const res = await request(app)
      .post('/api/bbsync/repositories/ws/repo/pipelines')
      .set('Authorization', header)
      .send({ branch: 'main', selector: 'deploy' });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      uuid: '{p-7}',
      build_number: 7,
      state: 'PENDING',
      url: 'https://bitbucket.org/ws/repo/pipelines/results/7',
    });
    expect(bbsync.seen[0].authorization).toBe(header);
    expect(JSON.parse(bbsync.seen[0].body)).toEqual({
      branch: 'main',
      selector: 'deploy',
    });
  });

  it('refuses a run without a branch before calling bbsync', async () => {
    const res = await request(app)
      .post('/api/bbsync/repositories/ws/repo/pipelines')
      .set('Authorization', as('writer'))
      .send({ selector: 'deploy' });
    expect(res.status).toBe(400);
    expect(bbsync.seen).toHaveLength(0);
  });

  it('reports a refused service token as bbsync being unavailable', async () => {
    const backend = await startTestBackend({
      features: [
        bbsyncPlugin,
        mockServices.rootConfig.factory({
          data: { bbsync: { baseUrl: bbsync.url, token: 'stale' } },
        }),
        catalogServiceMock.factory({ entities: [] }),
      ],
    });
    const res = await request(backend.server)
      .get('/api/bbsync/repositories/ws/repo/health')
      .set('Authorization', as('reader'));
    expect(res.status).toBe(503);
    expect(res.body.error.message).toContain('bbsync.token');
  });

  it('refuses a run by a service', async () => {
    const res = await request(app)
      .post('/api/bbsync/repositories/ws/repo/pipelines')
      .set('Authorization', mockCredentials.service.header())
      .send({ branch: 'main' });
    expect(res.status).toBe(403);
    expect(bbsync.seen).toHaveLength(0);
  });

  describe('Data Center repositories', () => {
    const dc = '/api/bbsync/repositories/bitbucket.example.com%2FPLAT/api';

    it('forwards {host}/{KEY} sent as one segment with its slash kept', async () => {
      const res = await request(app)
        .get(`${dc}/health`)
        .set('Authorization', as('reader'));
      expect(res.status).toBe(200);
      expect(res.body.repository).toBe('bitbucket.example.com/PLAT/api');
      expect(bbsync.seen[0].url).toBe(
        '/api/repositories/bitbucket.example.com/PLAT/api/health',
      );
      expect(bbsync.seen[0].authorization).toBe('Bearer svc');
    });

    it('forwards the lists with their parameters, a port and a personal project', async () => {
      for (const [path, seen] of [
        [
          `${dc}/pullrequests?state=OPEN&limit=5&evil=1`,
          '/api/repositories/bitbucket.example.com/PLAT/api/pullrequests?state=OPEN&limit=5',
        ],
        [
          `${dc}/statuses?commit=abc`,
          '/api/repositories/bitbucket.example.com/PLAT/api/statuses?commit=abc',
        ],
        [
          '/api/bbsync/repositories/bitbucket.example.com:7990%2F~ALICE/dots/pipelines',
          '/api/repositories/bitbucket.example.com:7990/~ALICE/dots/pipelines',
        ],
      ]) {
        bbsync.seen.length = 0;
        const res = await request(app)
          .get(path)
          .set('Authorization', as('reader'));
        expect(res.status).toBe(200);
        expect(bbsync.seen.map(s => s.url)).toEqual([seen]);
      }
    });

    it('says Data Center has no Pipelines instead of asking bbsync', async () => {
      const access = await request(app)
        .get(`${dc}/access`)
        .set('Authorization', as('writer'));
      expect(access.body).toEqual({
        canWrite: false,
        reason: 'Data Center has no Pipelines',
      });
      const run = await request(app)
        .post(`${dc}/pipelines`)
        .set('Authorization', as('writer'))
        .send({ branch: 'main' });
      expect(run.status).toBe(400);
      expect(run.body.error.message).toContain('Data Center has no Pipelines');
      expect(bbsync.seen).toHaveLength(0);
    });

    it('still wants credentials', async () => {
      const res = await request(app)
        .get(`${dc}/health`)
        .set('Authorization', mockCredentials.none.header());
      expect(res.status).toBe(401);
      expect(bbsync.seen).toHaveLength(0);
    });

    it.each([
      ['%2E%2E', 'repo'],
      ['%2E', 'repo'],
      ['ws', '%2E%2E'],
      ['bitbucket.example.com%2F..', 'api'],
      ['bitbucket.example.com%2F%2E%2E', 'api'],
      ['..%2FPLAT', 'api'],
      ['bitbucket.example.com%2FPLAT%2F..', 'api'],
      ['bitbucket.example.com%2F..%2F..%2Fadmin', 'api'],
      ['bitbucket.example.com%2Fplat', 'api'],
      ['bitbucket.example.com%2FPL-AT', 'api'],
      ['bitbucket.example.com%2F%2FPLAT', 'api'],
      ['%2FPLAT', 'api'],
      ['user%40evil.com%2FPLAT', 'api'],
      ['evil.com%3F%2FPLAT', 'api'],
      ['evil.com%23%2FPLAT', 'api'],
      ['evil.com%5CPLAT', 'api'],
      ['evil.com%2520%2FPLAT', 'api'],
      ['-evil.com%2FPLAT', 'api'],
      ['evil.com%3A99999%2FPLAT', 'api'],
      ['evil.com%0A%2FPLAT', 'api'],
      ['bitbucket.example.com%2FPLAT', 'a%2Fb'],
      ['bitbucket.example.com%2FPLAT', '..'],
    ])(
      'refuses workspace %s, slug %s before calling bbsync',
      async (ws, slug) => {
        const res = await request(app)
          .get(`/api/bbsync/repositories/${ws}/${slug}/health`)
          .set('Authorization', as('reader'));
        expect(res.status).toBe(400);
        expect(bbsync.seen).toHaveLength(0);
      },
    );
  });
});
