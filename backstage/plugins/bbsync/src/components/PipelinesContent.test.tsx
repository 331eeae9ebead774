import { renderInTestApp } from '@backstage/test-utils';
import { screen } from '@testing-library/react';
import { PipelinesContent } from './PipelinesContent';
import {
  dataCenterEntity,
  fakeApi,
  pending,
  Wrapper,
} from '../__testUtils__/testApi';

const reader = {
  getWriteAccess: async () => ({ canWrite: false, reason: 'no write access' }),
  getRepository: async () => ({ full_name: 'ws/repo', default_branch: 'main' }),
};

describe('PipelinesContent', () => {
  it('shows progress while loading', async () => {
    await renderInTestApp(
      <Wrapper api={fakeApi({ ...reader, getPipelines: pending })}>
        <PipelinesContent />
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
          ...reader,
          getPipelines: () => Promise.reject(new Error('bbsync: down')),
        })}
      >
        <PipelinesContent />
      </Wrapper>,
    );
    expect((await screen.findAllByText(/bbsync: down/)).length).toBeGreaterThan(
      0,
    );
  });

  it('says there are none', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({ ...reader, getPipelines: async () => ({ items: [] }) })}
      >
        <PipelinesContent />
      </Wrapper>,
    );
    expect(await screen.findByText('No pipelines yet.')).toBeInTheDocument();
  });

  it('lists pipelines with state, trigger, ref, duration and link', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          ...reader,
          getPipelines: async () => ({
            items: [
              {
                uuid: '{p}',
                build_number: 41,
                state: 'COMPLETED',
                result: 'SUCCESSFUL',
                trigger: 'PUSH',
                ref_name: 'main',
                duration_seconds: 125,
              },
            ],
          }),
        })}
      >
        <PipelinesContent />
      </Wrapper>,
    );
    expect(await screen.findByText('#41')).toHaveAttribute(
      'href',
      'https://bitbucket.org/ws/repo/pipelines/results/41',
    );
    expect(screen.getByText('COMPLETED · SUCCESSFUL')).toBeInTheDocument();
    expect(screen.getByText('PUSH')).toBeInTheDocument();
    expect(screen.getByText('2 min')).toBeInTheDocument();
  });

  it('explains that Data Center has no Pipelines, with no Run pipeline', async () => {
    const getPipelines = jest.fn(() => pending<{ items: [] }>());
    const getWriteAccess = jest.fn(() => pending<{ canWrite: boolean }>());
    await renderInTestApp(
      <Wrapper
        entity={dataCenterEntity}
        api={fakeApi({ getPipelines, getWriteAccess })}
      >
        <PipelinesContent />
      </Wrapper>,
    );
    expect(
      await screen.findByText('Data Center has no Pipelines'),
    ).toBeInTheDocument();
    expect(screen.getByText(/CI servers that report/)).toBeInTheDocument();
    expect(
      screen.queryByRole('button', { name: 'Run pipeline' }),
    ).not.toBeInTheDocument();
    expect(getPipelines).not.toHaveBeenCalled();
    expect(getWriteAccess).not.toHaveBeenCalled();
  });
});
