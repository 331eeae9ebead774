import { Config } from '@backstage/config';

/** The repositories a Bitbucket account may read and write, per bbsync. @public */
export interface BbsyncUserRepositories {
  read: string[];
  write: string[];
}

const WRITE = new Set(['write', 'admin']);

/**
 * Reads bbsync's mirrored permissions (`GET /api/permissions?user=`) for a
 * permission policy. Answers are kept for `cacheSeconds` so a page of catalog
 * reads costs one call.
 *
 * @public
 */
export class BbsyncPermissionsClient {
  private readonly cache = new Map<
    string,
    { at: number; value: BbsyncUserRepositories }
  >();

  /** From `bbsync.baseUrl` and `bbsync.token`. */
  static fromConfig(config: Config, options?: { cacheSeconds?: number }) {
    return new BbsyncPermissionsClient(
      config.getString('bbsync.baseUrl').replace(/\/+$/, ''),
      config.getString('bbsync.token'),
      options?.cacheSeconds ?? 30,
    );
  }

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    private readonly cacheSeconds = 30,
  ) {}

  /** The repositories of a Bitbucket account (id, nickname or uuid); empty when unknown. */
  async repositoriesOf(account: string): Promise<BbsyncUserRepositories> {
    const hit = this.cache.get(account);
    if (hit && Date.now() - hit.at < this.cacheSeconds * 1000) {
      return hit.value;
    }
    const url = new URL(`${this.baseUrl}/api/permissions`);
    url.searchParams.set('user', account);
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${this.token}` },
      signal: AbortSignal.timeout(10_000),
    });
    let value: BbsyncUserRepositories = { read: [], write: [] };
    if (response.ok) {
      const body = (await response.json()) as {
        items?: { repository: string; permission: string }[];
      };
      const items = body.items ?? [];
      value = {
        read: [...new Set(items.map(i => i.repository))],
        write: [
          ...new Set(
            items.filter(i => WRITE.has(i.permission)).map(i => i.repository),
          ),
        ],
      };
    } else if (response.status !== 404) {
      throw new Error(`bbsync permissions answered HTTP ${response.status}`);
    }
    this.cache.set(account, { at: Date.now(), value });
    return value;
  }
}
