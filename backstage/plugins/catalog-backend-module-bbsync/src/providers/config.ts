import {
  readSchedulerServiceTaskScheduleDefinitionFromConfig,
  SchedulerServiceTaskScheduleDefinition,
} from '@backstage/backend-plugin-api';
import { Config } from '@backstage/config';

/** The provider's settings, read from `catalog.providers.bbsync`. @public */
export interface BbsyncProviderConfig {
  baseUrl: string;
  token: string;
  pageSize: number;
  schedule: SchedulerServiceTaskScheduleDefinition;
}

const DEFAULT_SCHEDULE: SchedulerServiceTaskScheduleDefinition = {
  frequency: { seconds: 5 },
  timeout: { minutes: 3 },
};

/** Reads `catalog.providers.bbsync`; undefined when the block is absent. */
export function readProviderConfig(
  config: Config,
): BbsyncProviderConfig | undefined {
  const block = config.getOptionalConfig('catalog.providers.bbsync');
  if (!block) {
    return undefined;
  }
  const baseUrl = block.getString('baseUrl').replace(/\/+$/, '');
  if (!/^https?:\/\//.test(baseUrl)) {
    throw new Error(
      `catalog.providers.bbsync.baseUrl must be an http(s) URL, got '${baseUrl}'`,
    );
  }
  const pageSize = block.getOptionalNumber('pageSize') ?? 500;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
    throw new Error(
      'catalog.providers.bbsync.pageSize must be an integer from 1 to 1000',
    );
  }
  return {
    baseUrl,
    token: block.getString('token'),
    pageSize,
    schedule: block.has('schedule')
      ? readSchedulerServiceTaskScheduleDefinitionFromConfig(
          block.getConfig('schedule'),
        )
      : DEFAULT_SCHEDULE,
  };
}
