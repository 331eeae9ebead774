import { Link, Progress } from '@backstage/core-components';
import { useApi } from '@backstage/core-plugin-api';
import {
  BBSYNC_NO_DATA_CENTER_PIPELINES,
  BbsyncPipelineRun,
} from '@bbsync/plugin-bbsync-common';
import Button from '@material-ui/core/Button';
import Dialog from '@material-ui/core/Dialog';
import DialogActions from '@material-ui/core/DialogActions';
import DialogContent from '@material-ui/core/DialogContent';
import DialogTitle from '@material-ui/core/DialogTitle';
import TextField from '@material-ui/core/TextField';
import Tooltip from '@material-ui/core/Tooltip';
import Typography from '@material-ui/core/Typography';
import { useState } from 'react';
import useAsync from 'react-use/esm/useAsync';
import { bbsyncApiRef, BbsyncRepositoryRef } from '../api';
import { isDataCenter } from './useRepository';

function DisabledButton({ reason }: { reason: string }) {
  return (
    <Tooltip title={reason}>
      <span>
        <Button variant="contained" color="primary" disabled>
          Run pipeline
        </Button>
      </span>
    </Tooltip>
  );
}

/** @public */
export interface RunPipelineButtonProps {
  /** The repository; defaults to the current entity's. */
  repository: BbsyncRepositoryRef;
}

/**
 * Runs a Bitbucket pipeline as the signed-in user: a dialog with the branch
 * (the default branch preselected) and an optional custom selector. Disabled,
 * with the reason, when bbsync's mirrored permissions give the user no write
 * access, and for a Data Center repository (Data Center has no Pipelines).
 *
 * @public
 */
export function RunPipelineButton({ repository }: RunPipelineButtonProps) {
  if (isDataCenter(repository)) {
    return <DisabledButton reason={BBSYNC_NO_DATA_CENTER_PIPELINES} />;
  }
  return <CloudRunPipelineButton repository={repository} />;
}

function CloudRunPipelineButton({ repository }: RunPipelineButtonProps) {
  const api = useApi(bbsyncApiRef);
  const [open, setOpen] = useState(false);
  const [branch, setBranch] = useState<string>();
  const [selector, setSelector] = useState('');
  const [running, setRunning] = useState(false);
  const [run, setRun] = useState<BbsyncPipelineRun>();
  const [failure, setFailure] = useState<string>();

  const { value, loading, error } = useAsync(async () => {
    const [access, repo] = await Promise.all([
      api.getWriteAccess(repository),
      api.getRepository(repository),
    ]);
    return { access, defaultBranch: repo.default_branch ?? '' };
  }, [api, repository.workspace, repository.slug]);

  if (loading) {
    return <Progress />;
  }
  const reason = error
    ? `Cannot tell your access: ${error.message}`
    : (value?.access.reason ?? 'You cannot run pipelines here');
  if (error || !value?.access.canWrite) {
    return <DisabledButton reason={reason} />;
  }

  const chosenBranch = branch ?? value.defaultBranch;
  const submit = async () => {
    setRunning(true);
    setFailure(undefined);
    try {
      setRun(
        await api.runPipeline(repository, {
          branch: chosenBranch,
          ...(selector.trim() ? { selector: selector.trim() } : {}),
        }),
      );
    } catch (e) {
      setFailure((e as Error).message);
    } finally {
      setRunning(false);
    }
  };
  const close = () => {
    setOpen(false);
    setRun(undefined);
    setFailure(undefined);
  };

  return (
    <>
      <Button variant="contained" color="primary" onClick={() => setOpen(true)}>
        Run pipeline
      </Button>
      <Dialog open={open} onClose={close} fullWidth maxWidth="sm">
        <DialogTitle>
          Run pipeline in {repository.workspace}/{repository.slug}
        </DialogTitle>
        <DialogContent>
          {run ? (
            <Typography>
              Pipeline #{run.build_number} started ({run.state}).{' '}
              {run.url && <Link to={run.url}>Open it in Bitbucket</Link>}
            </Typography>
          ) : (
            <>
              <TextField
                id="bbsync-run-branch"
                label="Branch"
                value={chosenBranch}
                onChange={e => setBranch(e.target.value)}
                fullWidth
                margin="normal"
                required
              />
              <TextField
                id="bbsync-run-selector"
                label="Custom pipeline (optional)"
                value={selector}
                onChange={e => setSelector(e.target.value)}
                helperText="The name under pipelines.custom in bitbucket-pipelines.yml"
                fullWidth
                margin="normal"
              />
              {failure && (
                <Typography color="error" role="alert">
                  {failure}
                </Typography>
              )}
            </>
          )}
        </DialogContent>
        <DialogActions>
          <Button onClick={close}>{run ? 'Close' : 'Cancel'}</Button>
          {!run && (
            <Button
              color="primary"
              variant="contained"
              onClick={submit}
              disabled={running || !chosenBranch.trim()}
            >
              Run
            </Button>
          )}
        </DialogActions>
      </Dialog>
    </>
  );
}
