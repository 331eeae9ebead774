import { Entity } from '@backstage/catalog-model';

/**
 * Shapes of bbsync's JSON API as the bbsync backend plugin passes them on
 * (see bbsync's `/api/openapi.json`).
 */

/** @public */
export type BbsyncPullRequestState =
  'OPEN' | 'MERGED' | 'DECLINED' | 'SUPERSEDED';

/** @public */
export interface BbsyncAccount {
  account_id?: string | null;
  uuid?: string | null;
  display_name?: string | null;
  nickname?: string | null;
}

/** @public */
export interface BbsyncParticipant extends BbsyncAccount {
  role?: string | null;
  approved?: boolean | null;
  state?: string | null;
}

/** @public */
export interface BbsyncPullRequest {
  id: number;
  title: string;
  state: BbsyncPullRequestState;
  author?: string | null;
  author_account_id?: string | null;
  source_branch?: string | null;
  destination_branch?: string | null;
  comment_count?: number | null;
  task_count?: number | null;
  reviewers?: {
    reviewers?: BbsyncAccount[];
    participants?: BbsyncParticipant[];
  } | null;
  created_on?: string | null;
  updated_on?: string | null;
  closed_on?: string | null;
}

/** @public */
export interface BbsyncPipeline {
  uuid: string;
  build_number?: number | null;
  state: string;
  result?: string | null;
  trigger?: string | null;
  ref_type?: string | null;
  ref_name?: string | null;
  commit_hash?: string | null;
  duration_seconds?: number | null;
  created_on?: string | null;
  completed_on?: string | null;
}

/** @public */
export interface BbsyncPage<T> {
  items: T[];
  next_offset?: number | null;
}

/** @public */
export interface BbsyncBuild {
  source?: string;
  key?: string;
  name?: string | null;
  result?: string | null;
  commit?: string | null;
  at?: string | null;
  url?: string | null;
}

/** @public */
export interface BbsyncHeadBuild {
  key: string;
  state: string;
  name?: string | null;
  updated_on?: string | null;
}

/** @public */
export interface BbsyncHealth {
  repository: string;
  default_branch?: string | null;
  open_pull_requests: number;
  oldest_open_pull_request_age_seconds?: number | null;
  last_build?: BbsyncBuild | null;
  builds_on_head: BbsyncHeadBuild[];
  pipeline_runs: number;
  pipeline_success_rate?: number | null;
  last_push_at?: string | null;
}

/** The backend plugin's answer to "may the signed-in user run pipelines here". @public */
export interface BbsyncWriteAccess {
  canWrite: boolean;
  /** Why not, in words for the user, when `canWrite` is false. */
  reason?: string;
}

/** bbsync's answer to a pipeline run. @public */
export interface BbsyncPipelineRun {
  uuid?: string | null;
  build_number?: number | null;
  state?: string | null;
  /** A link to the pipeline in Bitbucket (added by the backend plugin). */
  url?: string;
}

/** One page of bbsync's change feed (`GET /catalog/changes`). @public */
export interface BbsyncChangePage {
  added: Entity[];
  removed: string[];
  cursor: string;
  more: boolean;
}
