import { BbsyncChangePage } from '@bbsync/plugin-bbsync-common';

/** bbsync no longer keeps changes that old: start again from a full read. */
export class CursorExpiredError extends Error {
  name = 'CursorExpiredError';
}

/** bbsync refused the token (401/403). */
export class FeedAuthError extends Error {
  name = 'FeedAuthError';
}

const REQUEST_TIMEOUT_MS = 30_000;

/** Reads one page of bbsync's change feed. */
export async function readChangePage(options: {
  baseUrl: string;
  token: string;
  since: string;
  limit: number;
}): Promise<BbsyncChangePage> {
  const url = new URL(`${options.baseUrl}/catalog/changes`);
  url.searchParams.set('since', options.since);
  url.searchParams.set('limit', String(options.limit));
  const response = await fetch(url, {
    headers: {
      Authorization: `Bearer ${options.token}`,
      Accept: 'application/json',
    },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (response.status === 410) {
    throw new CursorExpiredError(
      `bbsync no longer keeps changes after cursor ${options.since}`,
    );
  }
  if (response.status === 401 || response.status === 403) {
    throw new FeedAuthError(
      `bbsync refused the token configured in catalog.providers.bbsync.token (HTTP ${response.status})`,
    );
  }
  if (!response.ok) {
    throw new Error(
      `bbsync change feed answered HTTP ${response.status} for ${url.pathname}`,
    );
  }
  const body = (await response.json()) as Partial<BbsyncChangePage>;
  if (
    !Array.isArray(body.added) ||
    !Array.isArray(body.removed) ||
    (typeof body.cursor !== 'string' && typeof body.cursor !== 'number') ||
    typeof body.more !== 'boolean'
  ) {
    throw new Error(
      'bbsync change feed answered without added/removed/cursor/more',
    );
  }
  return {
    added: body.added,
    removed: body.removed,
    cursor: String(body.cursor),
    more: body.more,
  };
}
