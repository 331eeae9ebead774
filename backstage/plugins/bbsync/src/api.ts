import {
  createApiRef,
  DiscoveryApi,
  FetchApi,
} from '@backstage/core-plugin-api';
import { ResponseError } from '@backstage/errors';
import {
  BbsyncHealth,
  BbsyncPage,
  BbsyncPipeline,
  BbsyncPipelineRun,
  BbsyncPullRequest,
  BbsyncPullRequestState,
  BbsyncWriteAccess,
} from '@bbsync/plugin-bbsync-common';

/**
 * A Bitbucket repository by bbsync workspace and slug: a Cloud workspace, or
 * `{host}/{KEY}` for a Data Center project (then `server` is the host).
 *
 * @public
 */
export interface BbsyncRepositoryRef {
  workspace: string;
  slug: string;
  server?: string;
}

/** The repository fields the plugin shows. @public */
export interface BbsyncRepository {
  full_name: string;
  default_branch?: string | null;
  is_private?: boolean;
}

/** What the plugin reads and does through the bbsync backend plugin. @public */
export interface BbsyncApi {
  getRepository(repo: BbsyncRepositoryRef): Promise<BbsyncRepository>;
  getHealth(repo: BbsyncRepositoryRef): Promise<BbsyncHealth>;
  getPullRequests(
    repo: BbsyncRepositoryRef,
    options?: { states?: BbsyncPullRequestState[]; limit?: number },
  ): Promise<BbsyncPage<BbsyncPullRequest>>;
  getPipelines(
    repo: BbsyncRepositoryRef,
    options?: { limit?: number },
  ): Promise<BbsyncPage<BbsyncPipeline>>;
  getWriteAccess(repo: BbsyncRepositoryRef): Promise<BbsyncWriteAccess>;
  runPipeline(
    repo: BbsyncRepositoryRef,
    options: { branch: string; selector?: string },
  ): Promise<BbsyncPipelineRun>;
}

/** @public */
export const bbsyncApiRef = createApiRef<BbsyncApi>({ id: 'plugin.bbsync' });

/**
 * Calls the bbsync backend plugin (`/api/bbsync`): the service token stays
 * there; `fetchApi` sends the signed-in user's Backstage token.
 *
 * @public
 */
export class BbsyncClient implements BbsyncApi {
  constructor(
    private readonly options: {
      discoveryApi: DiscoveryApi;
      fetchApi: FetchApi;
    },
  ) {}

  getRepository(repo: BbsyncRepositoryRef) {
    return this.request<BbsyncRepository>(repo, '');
  }

  getHealth(repo: BbsyncRepositoryRef) {
    return this.request<BbsyncHealth>(repo, '/health');
  }

  getPullRequests(
    repo: BbsyncRepositoryRef,
    options?: { states?: BbsyncPullRequestState[]; limit?: number },
  ) {
    const query = new URLSearchParams();
    options?.states?.forEach(s => query.append('state', s));
    query.set('limit', String(options?.limit ?? 100));
    return this.request<BbsyncPage<BbsyncPullRequest>>(
      repo,
      `/pullrequests?${query}`,
    );
  }

  getPipelines(repo: BbsyncRepositoryRef, options?: { limit?: number }) {
    return this.request<BbsyncPage<BbsyncPipeline>>(
      repo,
      `/pipelines?limit=${options?.limit ?? 50}`,
    );
  }

  getWriteAccess(repo: BbsyncRepositoryRef) {
    return this.request<BbsyncWriteAccess>(repo, '/access');
  }

  runPipeline(
    repo: BbsyncRepositoryRef,
    options: { branch: string; selector?: string },
  ) {
    return this.request<BbsyncPipelineRun>(repo, '/pipelines', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(options),
    });
  }

  private async request<T>(
    repo: BbsyncRepositoryRef,
    path: string,
    init?: RequestInit,
  ): Promise<T> {
    const base = await this.options.discoveryApi.getBaseUrl('bbsync');
    // A Data Center workspace `{host}/{KEY}` travels as one segment
    // (`host%2FKEY`); the backend plugin decodes and validates it.
    const url = `${base}/repositories/${encodeURIComponent(
      repo.workspace,
    )}/${encodeURIComponent(repo.slug)}${path}`;
    const response = await this.options.fetchApi.fetch(url, init);
    if (!response.ok) {
      throw await ResponseError.fromResponse(response);
    }
    return (await response.json()) as T;
  }
}
