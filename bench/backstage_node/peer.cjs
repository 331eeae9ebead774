#!/usr/bin/env node
// Runs Backstage's own Bitbucket Cloud discovery and URL reader against bitbucket_sim, unmodified:
// `BitbucketCloudEntityProvider` (from @backstage/plugin-catalog-backend-module-bitbucket-cloud)
// with a connection that records its mutation and a scheduler that runs the refresh once, then
// the catalog's URL reader (`UrlReaders.default` from @backstage/backend-defaults) reading every
// discovered location the way the catalog's UrlReaderProcessor does (`search(url, {etag})`):
// one pass cold, one pass with the ETags of the first.
//
// Backstage hard-codes https://api.bitbucket.org/2.0 for Bitbucket Cloud, so the only thing
// changed is the network: requests to that base go to the simulator instead (like a hosts
// entry). Prints one JSON line with the locations found and the calls each phase made.
//
//   node peer.cjs <simulator API URL, e.g. http://127.0.0.1:5001/2.0> <workspace> <email> <token>
//
// Credentials: an Atlassian account email and API token (Basic), which both the provider's
// API client and the URL reader send.
'use strict';

const [apiUrl, workspace, username, token] = process.argv.slice(2);
if (!apiUrl || !workspace || !username || !token) {
  console.error('usage: node peer.cjs <api url> <workspace> <email> <token>');
  process.exit(2);
}
const BITBUCKET_API = 'https://api.bitbucket.org/2.0';
const simOrigin = new URL(apiUrl).origin;

let calls = 0;
const realFetch = globalThis.fetch;
const RealRequest = globalThis.Request;
function redirected(url) {
  return url.startsWith(BITBUCKET_API) ? apiUrl + url.slice(BITBUCKET_API.length) : url;
}
async function fetchToSimulator(input, init) {
  const url = typeof input === 'string' || input instanceof URL ? String(input) : input.url;
  const target = redirected(url);
  if (target.startsWith(simOrigin)) calls += 1;
  if (typeof input === 'string' || input instanceof URL) return realFetch(target, init);
  return realFetch(new RealRequest(target, input), init);
}
globalThis.fetch = fetchToSimulator;
// The provider's API client uses cross-fetch (node-fetch underneath): hand it the same fetch.
const crossFetchPath = require.resolve('cross-fetch', {
  paths: [require.resolve('@backstage/plugin-bitbucket-cloud-common')],
});
require.cache[crossFetchPath] = {
  id: crossFetchPath,
  filename: crossFetchPath,
  loaded: true,
  exports: Object.assign(fetchToSimulator, {
    default: fetchToSimulator,
    fetch: fetchToSimulator,
    Request: RealRequest,
    Response: globalThis.Response,
    Headers: globalThis.Headers,
  }),
};

const { ConfigReader } = require('@backstage/config');
const { UrlReaders } = require('@backstage/backend-defaults/urlReader');
const {
  BitbucketCloudEntityProvider,
} = require('@backstage/plugin-catalog-backend-module-bitbucket-cloud');

function quietLogger() {
  const logger = {
    child: () => logger,
    error: (message) => console.error(message),
    warn: () => {},
    info: () => {},
    debug: () => {},
  };
  return logger;
}

async function simStats() {
  const response = await realFetch(`${simOrigin}/_sim/stats`);
  return (await response.json()).calls_total;
}

async function main() {
  const config = new ConfigReader({
    integrations: { bitbucketCloud: [{ username, token }] },
    catalog: { providers: { bitbucketCloud: { workspace } } },
  });
  const logger = quietLogger();
  let refresh;
  const [provider] = BitbucketCloudEntityProvider.fromConfig(config, {
    auth: { getOwnServiceCredentials: async () => ({}) },
    catalog: { getEntities: async () => ({ items: [] }) },
    events: { subscribe: async () => {} },
    logger,
    schedule: { run: async ({ fn }) => { refresh = fn; } },
  });
  const mutations = [];
  await provider.connect({
    applyMutation: async (mutation) => { mutations.push(mutation); },
    refresh: async () => {},
  });
  const phases = {};
  async function phase(name, body) {
    const [before, ownBefore] = [await simStats(), calls];
    const started = Date.now();
    const result = await body();
    phases[name] = {
      calls: calls - ownBefore,
      sim_calls: (await simStats()) - before,
      seconds: (Date.now() - started) / 1000,
      ...result,
    };
  }

  await phase('discovery', async () => { await refresh(); return {}; });
  const full = mutations.find((m) => m.type === 'full');
  const targets = full ? full.entities.map((e) => e.entity.spec.target) : [];

  const reader = UrlReaders.default({ logger, config });
  const etags = new Map();
  async function readAll() {
    let read = 0, notModified = 0, missing = 0;
    for (const target of targets) {
      try {
        const { files, etag } = await reader.search(target, { etag: etags.get(target) });
        if (files.length === 0) missing += 1; else read += 1;
        etags.set(target, etag);
      } catch (error) {
        if (error.name !== 'NotModifiedError') throw error;
        notModified += 1;
      }
    }
    return { read, not_modified: notModified, missing };
  }
  await phase('read', readAll);
  await phase('etag_read', readAll);

  console.log(JSON.stringify({ locations: targets.length, targets, phases }));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
