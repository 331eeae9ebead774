import { SchedulerServiceTaskScheduleDefinitionConfig } from '@backstage/backend-plugin-api';

export interface Config {
  catalog?: {
    providers?: {
      /** bbsync's catalog provider: mirrors bbsync's catalog with full and delta mutations. */
      bbsync?: {
        /** bbsync's base URL, e.g. https://bbsync.example.com */
        baseUrl: string;
        /**
         * One of bbsync's service tokens (BBSYNC_API_TOKENS).
         * @visibility secret
         */
        token: string;
        /** Entities per change-feed page (default 500, at most 1000). */
        pageSize?: number;
        /** How often to poll the change feed (default: every 5 seconds, timeout 3 minutes). */
        schedule?: SchedulerServiceTaskScheduleDefinitionConfig;
      };
    };
  };
}
