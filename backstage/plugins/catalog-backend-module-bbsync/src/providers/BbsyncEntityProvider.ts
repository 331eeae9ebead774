import {
  LoggerService,
  RootConfigService,
  SchedulerService,
  SchedulerServiceTaskRunner,
} from '@backstage/backend-plugin-api';
import {
  ANNOTATION_LOCATION,
  ANNOTATION_ORIGIN_LOCATION,
  Entity,
  stringifyEntityRef,
} from '@backstage/catalog-model';
import {
  DeferredEntity,
  EntityProvider,
  EntityProviderConnection,
} from '@backstage/plugin-catalog-node';
import {
  CursorExpiredError,
  FeedAuthError,
  readChangePage,
} from './changeFeed';
import { BbsyncProviderConfig, readProviderConfig } from './config';

const PROVIDER_NAME = 'bbsync';

/**
 * Mirrors bbsync's catalog into Backstage's: a full mutation on the first
 * run (and whenever bbsync no longer keeps the cursor's changes), then one
 * delta mutation per page of bbsync's change feed.
 *
 * The cursor lives in memory: after a restart the provider starts with a full
 * mutation again, which the catalog turns into no work for unchanged entities.
 *
 * @public
 */
export class BbsyncEntityProvider implements EntityProvider {
  private connection?: EntityProviderConnection;
  private cursor?: string;
  private readonly locationKey: string;
  private readonly defaultLocation: string;

  /** The provider configured under `catalog.providers.bbsync`, if any. */
  static fromConfig(
    config: RootConfigService,
    options: { logger: LoggerService; scheduler: SchedulerService },
  ): BbsyncEntityProvider | undefined {
    const settings = readProviderConfig(config);
    if (!settings) {
      return undefined;
    }
    return new BbsyncEntityProvider(
      settings,
      options.logger,
      options.scheduler.createScheduledTaskRunner(settings.schedule),
    );
  }

  constructor(
    private readonly settings: BbsyncProviderConfig,
    private readonly logger: LoggerService,
    private readonly taskRunner?: SchedulerServiceTaskRunner,
  ) {
    this.locationKey = `${PROVIDER_NAME}-provider:${settings.baseUrl}`;
    this.defaultLocation = `url:${settings.baseUrl}/catalog/entities.yaml`;
  }

  getProviderName(): string {
    return PROVIDER_NAME;
  }

  async connect(connection: EntityProviderConnection): Promise<void> {
    this.connection = connection;
    await this.taskRunner?.run({
      id: `${PROVIDER_NAME}-provider:refresh`,
      fn: () => this.refresh(),
    });
  }

  /**
   * One run: a full mutation when no cursor is held, else the changes since
   * the cursor. An expired cursor falls back to a full mutation; a refused
   * token is logged and retried on the next run.
   */
  async refresh(): Promise<void> {
    if (!this.connection) {
      throw new Error('bbsync provider is not connected to the catalog');
    }
    try {
      if (this.cursor === undefined) {
        await this.fullMutation(this.connection);
      } else {
        await this.deltaMutations(this.connection, this.cursor);
      }
    } catch (error) {
      if (error instanceof FeedAuthError) {
        this.logger.error('bbsync change feed refused the token', {
          reason: error.message,
        });
        return;
      }
      throw error;
    }
  }

  private async fullMutation(connection: EntityProviderConnection) {
    const entities = new Map<string, Entity>();
    let since = '0';
    let pages = 0;
    for (;;) {
      const page = await this.read(since);
      pages += 1;
      for (const ref of page.removed) {
        entities.delete(ref.toLocaleLowerCase('en-US'));
      }
      for (const entity of page.added) {
        entities.set(
          stringifyEntityRef(entity).toLocaleLowerCase('en-US'),
          entity,
        );
      }
      since = page.cursor;
      if (!page.more) {
        break;
      }
    }
    await connection.applyMutation({
      type: 'full',
      entities: [...entities.values()].map(e => this.deferred(e)),
    });
    this.cursor = since;
    this.logger.info('bbsync full mutation applied', {
      entities: entities.size,
      pages,
      cursor: since,
    });
  }

  private async deltaMutations(
    connection: EntityProviderConnection,
    cursor: string,
  ) {
    let since = cursor;
    try {
      for (;;) {
        const page = await this.read(since);
        if (page.added.length > 0 || page.removed.length > 0) {
          await connection.applyMutation({
            type: 'delta',
            added: page.added.map(e => this.deferred(e)),
            removed: page.removed.map(entityRef => ({
              entityRef,
              locationKey: this.locationKey,
            })),
          });
          this.logger.debug('bbsync delta mutation applied', {
            added: page.added.length,
            removed: page.removed.length,
            cursor: page.cursor,
          });
        }
        // Kept page by page: a failure later on resumes after the last applied page.
        since = page.cursor;
        this.cursor = since;
        if (!page.more) {
          return;
        }
      }
    } catch (error) {
      if (!(error instanceof CursorExpiredError)) {
        throw error;
      }
      this.logger.warn('bbsync cursor expired, applying a full mutation', {
        cursor: since,
      });
      this.cursor = undefined;
      await this.fullMutation(connection);
    }
  }

  private read(since: string) {
    return readChangePage({
      baseUrl: this.settings.baseUrl,
      token: this.settings.token,
      since,
      limit: this.settings.pageSize,
    });
  }

  private deferred(entity: Entity): DeferredEntity {
    const annotations = entity.metadata.annotations ?? {};
    const location = annotations[ANNOTATION_LOCATION] ?? this.defaultLocation;
    return {
      locationKey: this.locationKey,
      entity: {
        ...entity,
        metadata: {
          ...entity.metadata,
          annotations: {
            ...annotations,
            [ANNOTATION_LOCATION]: location,
            [ANNOTATION_ORIGIN_LOCATION]:
              annotations[ANNOTATION_ORIGIN_LOCATION] ?? location,
          },
        },
      },
    };
  }
}
