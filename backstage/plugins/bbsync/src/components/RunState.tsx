import {
  StatusError,
  StatusOK,
  StatusPending,
  StatusRunning,
} from '@backstage/core-components';
import { BbsyncPipeline } from '@bbsync/plugin-bbsync-common';

/** A pipeline's state (and result once completed) with a status light. */
export function RunState({ pipeline }: { pipeline: BbsyncPipeline }) {
  const result = pipeline.result?.toUpperCase();
  const label = result ? `${pipeline.state} · ${result}` : pipeline.state;
  if (result === 'SUCCESSFUL') return <StatusOK>{label}</StatusOK>;
  if (result === 'FAILED' || result === 'ERROR' || result === 'STOPPED') {
    return <StatusError>{label}</StatusError>;
  }
  if (pipeline.state.toUpperCase() === 'IN_PROGRESS') {
    return <StatusRunning>{label}</StatusRunning>;
  }
  return <StatusPending>{label}</StatusPending>;
}
