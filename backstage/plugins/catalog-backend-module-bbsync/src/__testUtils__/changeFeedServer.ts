import { Entity } from '@backstage/catalog-model';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';

/** A Component entity as bbsync would serve it. */
export function component(name: string): Entity {
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Component',
    metadata: {
      name,
      annotations: { 'bitbucket.com/project-slug': `ws/${name}` },
    },
    spec: { type: 'service', lifecycle: 'production', owner: 'team-a' },
  };
}

type Change = { seq: number; entity?: Entity; removed?: string };

/**
 * A tiny stand-in for bbsync's change feed (`GET /catalog/changes`) on a real
 * local HTTP port: a numbered log of changes, paged by `limit`, `410` for a
 * cursor older than `expireBefore`, `401` for any other token.
 */
export class ChangeFeedServer {
  readonly requests: { since: string; limit: string }[] = [];
  failWith?: number;
  private changes: Change[] = [];
  private oldest = 0;

  private constructor(
    private readonly server: Server,
    public token: string,
  ) {}

  static async start(token: string): Promise<ChangeFeedServer> {
    const server = createServer();
    const feed = new ChangeFeedServer(server, token);
    server.on('request', (req, res) =>
      feed.handle(req.url ?? '/', req.headers.authorization, res),
    );
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    return feed;
  }

  get baseUrl(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  add(...entities: Entity[]) {
    for (const entity of entities) {
      this.changes.push({ seq: this.changes.length + 1, entity });
    }
  }

  remove(ref: string) {
    this.changes.push({ seq: this.changes.length + 1, removed: ref });
  }

  /** Forget changes up to `seq`: a cursor before it answers 410. */
  expireBefore(seq: number) {
    this.oldest = seq;
  }

  stop(): Promise<void> {
    return new Promise(resolve => this.server.close(() => resolve()));
  }

  private handle(
    path: string,
    authorization: string | undefined,
    res: import('node:http').ServerResponse,
  ) {
    const url = new URL(path, 'http://feed');
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname !== '/catalog/changes') {
      reply(404, { error: 'not_found' });
      return;
    }
    if (authorization !== `Bearer ${this.token}`) {
      reply(401, { error: 'unauthorized' });
      return;
    }
    const since = url.searchParams.get('since') ?? '';
    const limit = url.searchParams.get('limit') ?? '100';
    this.requests.push({ since, limit });
    if (this.failWith) {
      reply(this.failWith, { error: 'unavailable' });
      return;
    }
    const after = Number(since);
    if (after !== 0 && after < this.oldest) {
      reply(410, { error: 'gone', message: 'cursor too old' });
      return;
    }
    const page = this.changes
      .filter(c => c.seq > after)
      .slice(0, Number(limit));
    const cursor = page.length ? page[page.length - 1].seq : after;
    reply(200, {
      added: page.filter(c => c.entity).map(c => c.entity),
      removed: page.filter(c => c.removed).map(c => c.removed),
      cursor: String(cursor),
      more: this.changes.some(c => c.seq > cursor),
    });
  }
}
