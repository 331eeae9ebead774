import { Config } from '@backstage/config';

/** An answer from bbsync, passed on as it came (status and JSON body). */
export interface BbsyncReply {
  status: number;
  body: unknown;
}

const TIMEOUT_MS = 15_000;

/** bbsync's JSON API, called with the service token unless told otherwise. */
export class BbsyncApi {
  static fromConfig(config: Config): BbsyncApi {
    const baseUrl = config.getString('bbsync.baseUrl').replace(/\/+$/, '');
    if (!/^https?:\/\//.test(baseUrl)) {
      throw new Error(
        `bbsync.baseUrl must be an http(s) URL, got '${baseUrl}'`,
      );
    }
    return new BbsyncApi(
      baseUrl,
      config.getString('bbsync.token'),
      (
        config.getOptionalString('bbsync.webUrl') ?? 'https://bitbucket.org'
      ).replace(/\/+$/, ''),
    );
  }

  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    readonly webUrl: string,
  ) {}

  /** GET a path of bbsync's API with the service token. */
  get(path: string, query?: URLSearchParams): Promise<BbsyncReply> {
    return this.call('GET', path, `Bearer ${this.token}`, undefined, query);
  }

  /** POST as the user: `authorization` is the user's own Backstage bearer. */
  postAsUser(
    path: string,
    authorization: string,
    body: unknown,
  ): Promise<BbsyncReply> {
    return this.call('POST', path, authorization, body);
  }

  private async call(
    method: string,
    path: string,
    authorization: string,
    body?: unknown,
    query?: URLSearchParams,
  ): Promise<BbsyncReply> {
    const url = new URL(`${this.baseUrl}${path}`);
    if (query) {
      url.search = query.toString();
    }
    const response = await fetch(url, {
      method,
      headers: {
        Authorization: authorization,
        Accept: 'application/json',
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { error: 'bad_gateway', message: 'bbsync answered non-JSON' };
    }
    return { status: response.status, body: parsed };
  }
}
