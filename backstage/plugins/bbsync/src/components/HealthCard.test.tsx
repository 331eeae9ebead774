import { renderInTestApp } from '@backstage/test-utils';
import { screen } from '@testing-library/react';
import { HealthCard } from './HealthCard';
import { fakeApi, pending, Wrapper } from '../__testUtils__/testApi';

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
});
