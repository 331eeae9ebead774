import { renderInTestApp } from '@backstage/test-utils';
import { fireEvent, screen, waitFor } from '@testing-library/react';
import { RunPipelineButton } from './RunPipelineButton';
import { fakeApi, Wrapper } from '../__testUtils__/testApi';

const repo = { workspace: 'ws', slug: 'repo' };
const repository = async () => ({
  full_name: 'ws/repo',
  default_branch: 'develop',
});

describe('RunPipelineButton', () => {
  it('is disabled for a reader, with the reason', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getRepository: repository,
          getWriteAccess: async () => ({
            canWrite: false,
            reason: 'Bitbucket gives you no write access to ws/repo',
          }),
        })}
      >
        <RunPipelineButton repository={repo} />
      </Wrapper>,
    );
    const button = await screen.findByRole('button', { name: 'Run pipeline' });
    expect(button).toBeDisabled();
    expect(
      screen.getByTitle('Bitbucket gives you no write access to ws/repo'),
    ).toBeInTheDocument();
  });

  it('is disabled when access cannot be read', async () => {
    await renderInTestApp(
      <Wrapper api={fakeApi({ getRepository: repository })}>
        <RunPipelineButton repository={repo} />
      </Wrapper>,
    );
    expect(
      await screen.findByRole('button', { name: 'Run pipeline' }),
    ).toBeDisabled();
  });

  it('runs on the default branch with a custom selector and links to the run', async () => {
    const runPipeline = jest.fn(async () => ({
      uuid: '{r}',
      build_number: 8,
      state: 'PENDING',
      url: 'https://bitbucket.org/ws/repo/pipelines/results/8',
    }));
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getRepository: repository,
          getWriteAccess: async () => ({ canWrite: true }),
          runPipeline,
        })}
      >
        <RunPipelineButton repository={repo} />
      </Wrapper>,
    );
    fireEvent.click(
      await screen.findByRole('button', { name: 'Run pipeline' }),
    );
    expect(screen.getByLabelText(/Branch/)).toHaveValue('develop');
    fireEvent.change(screen.getByLabelText(/Custom pipeline/), {
      target: { value: 'deploy' },
    });
    fireEvent.click(screen.getByRole('button', { name: 'Run' }));
    await waitFor(() =>
      expect(screen.getByText('Open it in Bitbucket')).toHaveAttribute(
        'href',
        'https://bitbucket.org/ws/repo/pipelines/results/8',
      ),
    );
    expect(runPipeline).toHaveBeenCalledWith(repo, {
      branch: 'develop',
      selector: 'deploy',
    });
  });

  it('shows why bbsync refused the run', async () => {
    await renderInTestApp(
      <Wrapper
        api={fakeApi({
          getRepository: repository,
          getWriteAccess: async () => ({ canWrite: true }),
          runPipeline: () =>
            Promise.reject(new Error('user token refused: audience')),
        })}
      >
        <RunPipelineButton repository={repo} />
      </Wrapper>,
    );
    fireEvent.click(
      await screen.findByRole('button', { name: 'Run pipeline' }),
    );
    fireEvent.click(screen.getByRole('button', { name: 'Run' }));
    expect(await screen.findByRole('alert')).toHaveTextContent(
      'user token refused',
    );
  });

  it('is disabled for a Data Center repository without asking bbsync', async () => {
    const getWriteAccess = jest.fn(async () => ({ canWrite: true }));
    await renderInTestApp(
      <Wrapper api={fakeApi({ getRepository: repository, getWriteAccess })}>
        <RunPipelineButton
          repository={{ workspace: 'bitbucket.example.com/PLAT', slug: 'api' }}
        />
      </Wrapper>,
    );
    const button = await screen.findByRole('button', { name: 'Run pipeline' });
    expect(button).toBeDisabled();
    expect(
      screen.getByTitle('Data Center has no Pipelines'),
    ).toBeInTheDocument();
    expect(getWriteAccess).not.toHaveBeenCalled();
  });
});
