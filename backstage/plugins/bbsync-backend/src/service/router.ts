import {
  AuthService,
  HttpAuthService,
  LoggerService,
} from '@backstage/backend-plugin-api';
import {
  AuthenticationError,
  InputError,
  NotAllowedError,
  NotFoundError,
  ServiceUnavailableError,
} from '@backstage/errors';
import { CatalogService } from '@backstage/plugin-catalog-node';
import {
  BBSYNC_USER_ID_ANNOTATION,
  BbsyncPipelineRun,
  BbsyncWriteAccess,
  BBSYNC_NO_DATA_CENTER_PIPELINES as NO_DATA_CENTER_PIPELINES,
  isBbsyncName,
  parseBbsyncWorkspace,
} from '@bbsync/plugin-bbsync-common';
import express from 'express';
import Router from 'express-promise-router';
import { BbsyncApi, BbsyncReply } from './BbsyncApi';

const WRITE = new Set(['write', 'admin']);
/** Query parameters passed on to bbsync's list endpoints; anything else is dropped. */
const LIST_PARAMS = [
  'state',
  'limit',
  'offset',
  'result',
  'ref',
  'commit',
  'key',
];

/** What the router needs. */
export interface RouterOptions {
  bbsync: BbsyncApi;
  httpAuth: HttpAuthService;
  auth: AuthService;
  catalog: CatalogService;
  logger: LoggerService;
}

/**
 * The repository of `/repositories/:workspace/:slug` as bbsync's API path.
 * The workspace is a Cloud workspace, or a Data Center project `{host}/{KEY}`
 * sent as one path segment (`bitbucket.example.com%2FPLAT`, which Express
 * decodes); it goes to bbsync with its slash kept, which bbsync's `workspace`
 * URL converter reads. Both parts are validated strictly first, so nothing
 * but a host, a project key and Bitbucket names reaches bbsync's URL.
 */
function resolveRepository(req: express.Request): {
  path: string;
  dataCenter: boolean;
} {
  const { workspace, slug } = req.params;
  const parsed = parseBbsyncWorkspace(workspace);
  if (!parsed || !isBbsyncName(slug)) {
    throw new InputError(
      'workspace must be a Bitbucket workspace or a Data Center {host}/{KEY}, and slug a Bitbucket name',
    );
  }
  return {
    path: `/api/repositories/${parsed.workspace}/${slug}`,
    dataCenter: parsed.kind === 'datacenter',
  };
}

function repositoryPath(req: express.Request): string {
  return resolveRepository(req).path;
}

function message(reply: BbsyncReply): string {
  const body = reply.body as { message?: unknown; error?: unknown };
  const text = body?.message ?? body?.error;
  return typeof text === 'string'
    ? text
    : `bbsync answered HTTP ${reply.status}`;
}

/** bbsync's answer as the body, or its failure as a Backstage error. */
function unwrap(reply: BbsyncReply, asUser = false): unknown {
  if (reply.status >= 200 && reply.status < 300) {
    return reply.body;
  }
  const text = message(reply);
  switch (reply.status) {
    case 400:
    case 422:
      throw new InputError(text);
    case 401:
      if (asUser) {
        throw new AuthenticationError(`bbsync refused your token: ${text}`);
      }
      throw new ServiceUnavailableError(
        'bbsync refused the service token in bbsync.token',
      );
    case 403:
      throw new NotAllowedError(text);
    case 404:
      throw new NotFoundError(text);
    default:
      throw new ServiceUnavailableError(`bbsync: ${text}`);
  }
}

function listQuery(req: express.Request): URLSearchParams {
  const query = new URLSearchParams();
  for (const name of LIST_PARAMS) {
    const value = req.query[name];
    for (const item of Array.isArray(value) ? value : [value]) {
      if (typeof item === 'string' && item.length <= 100) {
        query.append(name, item);
      }
    }
  }
  return query;
}

/** The `/api/bbsync` router. */
export async function createRouter(
  options: RouterOptions,
): Promise<express.Router> {
  const { bbsync, httpAuth, auth, catalog, logger } = options;
  const router = Router();
  router.use(express.json({ limit: '16kb' }));

  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/repositories/:workspace/:slug', async (req, res) => {
    await httpAuth.credentials(req, { allow: ['user', 'service'] });
    res.json(unwrap(await bbsync.get(repositoryPath(req))));
  });

  for (const list of ['pullrequests', 'pipelines', 'statuses', 'health']) {
    router.get(`/repositories/:workspace/:slug/${list}`, async (req, res) => {
      await httpAuth.credentials(req, { allow: ['user', 'service'] });
      const reply = await bbsync.get(
        `${repositoryPath(req)}/${list}`,
        listQuery(req),
      );
      res.json(unwrap(reply));
    });
  }

  router.get('/repositories/:workspace/:slug/access', async (req, res) => {
    const { path, dataCenter } = resolveRepository(req);
    const credentials = await httpAuth.credentials(req, { allow: ['user'] });
    if (dataCenter) {
      const answer: BbsyncWriteAccess = {
        canWrite: false,
        reason: NO_DATA_CENTER_PIPELINES,
      };
      res.json(answer);
      return;
    }
    const userRef = credentials.principal.userEntityRef;
    const user = await catalog.getEntityByRef(userRef, {
      credentials: await auth.getOwnServiceCredentials(),
    });
    const account = user?.metadata.annotations?.[BBSYNC_USER_ID_ANNOTATION];
    let answer: BbsyncWriteAccess;
    if (!account) {
      answer = {
        canWrite: false,
        reason: `${userRef} has no ${BBSYNC_USER_ID_ANNOTATION} annotation, so bbsync cannot tell your Bitbucket access`,
      };
    } else {
      const reply = await bbsync.get(
        '/api/permissions',
        new URLSearchParams({ user: account }),
      );
      const repository = path.slice('/api/repositories/'.length).toLowerCase();
      const items =
        reply.status === 404
          ? []
          : ((
              unwrap(reply) as {
                items?: { repository: string; permission: string }[];
              }
            ).items ?? []);
      const canWrite = items.some(
        i =>
          i.repository.toLowerCase() === repository && WRITE.has(i.permission),
      );
      answer = canWrite
        ? { canWrite }
        : {
            canWrite,
            reason: `Bitbucket gives you no write access to ${repository}`,
          };
    }
    res.json(answer);
  });

  router.post('/repositories/:workspace/:slug/pipelines', async (req, res) => {
    const { path, dataCenter } = resolveRepository(req);
    const credentials = await httpAuth.credentials(req, { allow: ['user'] });
    if (dataCenter) {
      // bbsync would answer 400 not_supported too; no need to ask it.
      throw new InputError(
        `${NO_DATA_CENTER_PIPELINES}: run its builds in the CI server that reports to it`,
      );
    }
    const { branch, selector } = req.body ?? {};
    if (typeof branch !== 'string' || !branch || branch.length > 255) {
      throw new InputError('give the branch to run the pipeline on');
    }
    if (
      selector !== undefined &&
      selector !== null &&
      (typeof selector !== 'string' || !selector || selector.length > 255)
    ) {
      throw new InputError('selector must be a pipeline name');
    }
    // bbsync verifies the user's own Backstage token against Backstage's JWKS
    // and checks the user's Bitbucket write access itself.
    const authorization = req.header('authorization') ?? '';
    const reply = await bbsync.postAsUser(`${path}/pipelines`, authorization, {
      branch,
      ...(selector ? { selector } : {}),
    });
    const run = unwrap(reply, true) as BbsyncPipelineRun;
    logger.info('bbsync pipeline run requested', {
      user: credentials.principal.userEntityRef,
      repository: path,
      branch,
      build: run.build_number ?? undefined,
    });
    const { workspace, slug } = req.params;
    res.status(201).json({
      ...run,
      ...(run.build_number
        ? {
            url: `${bbsync.webUrl}/${workspace}/${slug}/pipelines/results/${run.build_number}`,
          }
        : {}),
    });
  });

  return router;
}
