import { renderInTestApp } from '@backstage/test-utils';
import { screen } from '@testing-library/react';
import { PullRequestsContent } from './PullRequestsContent';
import {
  dataCenterEntity,
  fakeApi,
  pending,
  Wrapper,
} from '../__testUtils__/testApi';

describe('PullRequestsContent', () => {
  it('shows progress while loading', async () => {
    await renderInTestApp(
      <Wrapper api={fakeApi({ getPullRequests: pending })}>
        <PullRequestsContent />
      </Wrapper>,
    );
    expect((await screen.findAllByRole('progressbar')).length).toBeGreaterThan(
      0,
    );
  });

  it('shows the error', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getPullRequests: () => Promise.reject(new Error('bbsync: down')),
        })}
      >
        <PullRequestsContent />
      </Wrapper>,
    );
    expect((await screen.findAllByText(/bbsync: down/)).length).toBeGreaterThan(
      0,
    );
  });

  it('says there are none', async () => {
    await renderInTestApp(
      <Wrapper api={fakeApi({ getPullRequests: async () => ({ items: [] }) })}>
        <PullRequestsContent />
      </Wrapper>,
    );
    expect(
      await screen.findByText('No open pull requests.'),
    ).toBeInTheDocument();
  });

  it('lists pull requests with author, reviewers and approvals, asking for open ones', async () => {
    const getPullRequests = jest.fn(async () => ({
      items: [
        {
          id: 9,
          title: 'Speed up sync',
          state: 'OPEN' as const,
          author: 'Grace',
          source_branch: 'fast',
          destination_branch: 'main',
          created_on: new Date(Date.now() - 3 * 86400_000).toISOString(),
          reviewers: {
            participants: [
              { display_name: 'Alan', role: 'REVIEWER', approved: true },
              { display_name: 'Edsger', role: 'REVIEWER', approved: false },
            ],
          },
        },
      ],
    }));
    await renderInTestApp(
      <Wrapper api={fakeApi({ getPullRequests })}>
        <PullRequestsContent />
      </Wrapper>,
    );
    expect(await screen.findByText('#9 Speed up sync')).toHaveAttribute(
      'href',
      'https://bitbucket.org/ws/repo/pull-requests/9',
    );
    expect(screen.getByText('Grace')).toBeInTheDocument();
    expect(screen.getByText('Alan, Edsger (1 approved)')).toBeInTheDocument();
    expect(screen.getByText('3 d')).toBeInTheDocument();
    expect(getPullRequests).toHaveBeenCalledWith(
      { workspace: 'ws', slug: 'repo' },
      { states: ['OPEN'] },
    );
  });

  it("lists a Data Center repository's pull requests, linked on its server", async () => {
    const getPullRequests = jest.fn(async () => ({
      items: [{ id: 4, title: 'Port to DC', state: 'OPEN' as const }],
    }));
    await renderInTestApp(
      <Wrapper
        entity={{
          ...dataCenterEntity,
          metadata: {
            ...dataCenterEntity.metadata,
            annotations: {
              'bitbucket.com/project-slug': 'PLAT/api',
              'bbsync.io/bitbucket-server': 'git.internal:7990',
              'backstage.io/source-location':
                'url:http://git.internal:7990/bitbucket/projects/PLAT/repos/api/browse/svc/',
            },
          },
        }}
        api={fakeApi({ getPullRequests })}
      >
        <PullRequestsContent />
      </Wrapper>,
    );
    expect(await screen.findByText('#4 Port to DC')).toHaveAttribute(
      'href',
      'http://git.internal:7990/bitbucket/projects/PLAT/repos/api/pull-requests/4',
    );
    expect(getPullRequests).toHaveBeenCalledWith(
      {
        workspace: 'git.internal:7990/PLAT',
        slug: 'api',
        server: 'git.internal:7990',
      },
      { states: ['OPEN'] },
    );
  });
});
