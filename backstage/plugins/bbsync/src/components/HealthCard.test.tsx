import { renderInTestApp } from '@backstage/test-utils';
import { screen } from '@testing-library/react';
import { HealthCard } from './HealthCard';
import {
  dataCenterEntity,
  fakeApi,
  pending,
  Wrapper,
} from '../__testUtils__/testApi';

const health = {
  repository: 'ws/repo',
  default_branch: 'main',
  open_pull_requests: 1,
  builds_on_head: [{ key: 'ci', state: 'SUCCESSFUL', name: 'CI build' }],
  pipeline_runs: 4,
  pipeline_success_rate: 0.75,
};

describe('HealthCard', () => {
  it('shows progress while loading', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getHealth: pending,
          getPipelines: pending,
          getPullRequests: pending,
        })}
      >
        <HealthCard />
      </Wrapper>,
    );
    expect(screen.getByTestId('progress')).toBeInTheDocument();
  });

  it('shows the error when bbsync cannot be read', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getHealth: () =>
            Promise.reject(
              new Error('repository ws/repo is not known to bbsync'),
            ),
          getPipelines: async () => ({ items: [] }),
          getPullRequests: async () => ({ items: [] }),
        })}
      >
        <HealthCard />
      </Wrapper>,
    );
    expect(
      (await screen.findAllByText(/is not known to bbsync/)).length,
    ).toBeGreaterThan(0);
  });

  it('says so when there is nothing yet', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getHealth: async () => ({
            ...health,
            open_pull_requests: 0,
            builds_on_head: [],
            pipeline_runs: 0,
            pipeline_success_rate: null,
          }),
          getPipelines: async () => ({ items: [] }),
          getPullRequests: async () => ({ items: [] }),
        })}
      >
        <HealthCard />
      </Wrapper>,
    );
    expect(
      await screen.findByText('No builds on the default branch yet.'),
    ).toBeInTheDocument();
    expect(screen.getByText('No pipelines yet.')).toBeInTheDocument();
    expect(screen.getByText('No open pull requests.')).toBeInTheDocument();
  });

  it('shows builds, pipelines and open pull requests with links', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getHealth: async () => health,
          getPipelines: async () => ({
            items: [
              {
                uuid: '{1}',
                build_number: 12,
                state: 'COMPLETED',
                result: 'FAILED',
                ref_name: 'main',
              },
            ],
          }),
          getPullRequests: async () => ({
            items: [
              {
                id: 3,
                title: 'Add cache',
                state: 'OPEN' as const,
                author: 'Ada',
                created_on: new Date(Date.now() - 7200_000).toISOString(),
              },
            ],
          }),
        })}
      >
        <HealthCard />
      </Wrapper>,
    );
    expect(await screen.findByText('SUCCESSFUL')).toBeInTheDocument();
    expect(screen.getByText('CI build')).toBeInTheDocument();
    expect(screen.getByText('COMPLETED · FAILED')).toBeInTheDocument();
    expect(screen.getByText('#12 main').closest('a')).toHaveAttribute(
      'href',
      'https://bitbucket.org/ws/repo/pipelines/results/12',
    );
    expect(screen.getByText('#3 Add cache').closest('a')).toHaveAttribute(
      'href',
      'https://bitbucket.org/ws/repo/pull-requests/3',
    );
    expect(screen.getByText('Ada · 2 h old')).toBeInTheDocument();
    expect(
      screen.getByText(/Success rate 75 % over 4 runs/),
    ).toBeInTheDocument();
  });

  it('shows a Data Center repository: build statuses, pull requests, no Pipelines', async () => {
    const getHealth = jest.fn(async () => ({
      repository: 'bitbucket.example.com/PLAT/api',
      default_branch: 'master',
      open_pull_requests: 1,
      builds_on_head: [
        { key: 'jenkins-42', state: 'FAILED', name: 'Jenkins #42' },
      ],
      last_build: { key: 'jenkins-42', name: 'Jenkins #42', result: 'FAILED' },
      pipeline_runs: 0,
      pipeline_success_rate: null,
    }));
    const getPullRequests = jest.fn(async () => ({
      items: [{ id: 5, title: 'Tidy', state: 'OPEN' as const, author: 'Lin' }],
    }));
    // getPipelines is not given: asking for it would fail the card.
    await renderInTestApp(
      <Wrapper
        entity={dataCenterEntity}
        api={fakeApi({ getHealth, getPullRequests })}
      >
        <HealthCard />
      </Wrapper>,
    );
    expect(await screen.findByText('FAILED')).toBeInTheDocument();
    expect(
      screen.getByText('bitbucket.example.com/PLAT/api'),
    ).toBeInTheDocument();
    expect(
      screen.getByText(/Data Center has no Pipelines/),
    ).toBeInTheDocument();
    expect(screen.getByText(/Last build: Jenkins #42/)).toBeInTheDocument();
    expect(screen.queryByText('Last pipelines')).not.toBeInTheDocument();
    expect(screen.getByText('#5 Tidy').closest('a')).toHaveAttribute(
      'href',
      'https://bitbucket.example.com/projects/PLAT/repos/api/pull-requests/5',
    );
    const repo = {
      workspace: 'bitbucket.example.com/PLAT',
      slug: 'api',
      server: 'bitbucket.example.com',
    };
    expect(getHealth).toHaveBeenCalledWith(repo);
    expect(getPullRequests).toHaveBeenCalledWith(repo, {
      states: ['OPEN'],
      limit: 5,
    });
  });
});
