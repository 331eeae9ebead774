import { BbsyncClient } from './api';

describe('BbsyncClient', () => {
  const repo = { workspace: 'ws', slug: 'my repo' };
  const discoveryApi = {
    getBaseUrl: async (id: string) => `http://backstage.test/api/${id}`,
  };

  function client(reply: Response) {
    const fetch = jest.fn(async () => reply);
    return {
      fetch,
      api: new BbsyncClient({ discoveryApi, fetchApi: { fetch } }),
    };
  }

  it('reads through the backend plugin, one query parameter per state', async () => {
    const { fetch, api } = client(
      new Response(JSON.stringify({ items: [] }), { status: 200 }),
    );
    await api.getPullRequests(repo, { states: ['OPEN', 'MERGED'], limit: 5 });
    expect(fetch).toHaveBeenCalledWith(
      'http://backstage.test/api/bbsync/repositories/ws/my%20repo/pullrequests?state=OPEN&state=MERGED&limit=5',
      undefined,
    );
  });

  it('posts a run as JSON', async () => {
    const { fetch, api } = client(
      new Response(JSON.stringify({ build_number: 3 }), { status: 201 }),
    );
    await expect(
      api.runPipeline(repo, { branch: 'main', selector: 'deploy' }),
    ).resolves.toEqual({ build_number: 3 });
    expect(fetch).toHaveBeenCalledWith(
      'http://backstage.test/api/bbsync/repositories/ws/my%20repo/pipelines',
      expect.objectContaining({
        method: 'POST',
        body: JSON.stringify({ branch: 'main', selector: 'deploy' }),
      }),
    );
  });

  it("turns the backend's error into a ResponseError with its message", async () => {
    const { api } = client(
      new Response(
        JSON.stringify({
          error: {
            name: 'NotFoundError',
            message: 'repository ws/x is not known',
          },
          response: { statusCode: 404 },
        }),
        { status: 404, headers: { 'Content-Type': 'application/json' } },
      ),
    );
    await expect(api.getHealth(repo)).rejects.toMatchObject({
      name: 'ResponseError',
      statusCode: 404,
      cause: { message: 'repository ws/x is not known' },
    });
  });

  it('sends a Data Center workspace {host}/{KEY} as one encoded segment', async () => {
    const { fetch, api } = client(
      new Response(JSON.stringify({ repository: 'x' }), { status: 200 }),
    );
    await api.getHealth({
      workspace: 'bitbucket.example.com:7990/~ALICE',
      slug: 'dots',
      server: 'bitbucket.example.com:7990',
    });
    expect(fetch).toHaveBeenCalledWith(
      'http://backstage.test/api/bbsync/repositories/bitbucket.example.com%3A7990%2F~ALICE/dots/health',
      undefined,
    );
  });
});
