#!/usr/bin/env bash
# `make run`: migrate a local SQLite database and start web, worker and beat together.
# With no Bitbucket credentials configured, first start the simulator with a demo workspace
# and point bbsync at it.
set -euo pipefail
cd "$(dirname "$0")/.."

has_env() { [ -n "${!1:-}" ] || { [ -f .env ] && grep -Eq "^$1=.+" .env; }; }

export DATABASE_URL="${DATABASE_URL:-sqlite:///bbsync.db}"
export PORT="${PORT:-5000}"
SIM_PID=""
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! redis-cli -u "${REDIS_URL:-redis://localhost:6379/0}" ping >/dev/null 2>&1; then
  echo "Redis is not answering at ${REDIS_URL:-redis://localhost:6379/0}; start it first" >&2
  exit 1
fi

if ! has_env BITBUCKET_ACCESS_TOKEN && ! has_env BITBUCKET_API_TOKEN \
   && ! has_env BITBUCKET_OAUTH_CLIENT_ID; then
  SIM_PORT="${SIM_PORT:-7990}"
  echo "No Bitbucket credentials set: starting the simulator on port $SIM_PORT (workspace demo)"
  python -m bitbucket_sim --port "$SIM_PORT" --workspace demo --repos 60 --seed 7 \
    --access-token demo-token &
  SIM_PID=$!
  export BITBUCKET_API_URL="http://127.0.0.1:$SIM_PORT/2.0"
  export BITBUCKET_WORKSPACES=demo
  export BITBUCKET_ACCESS_TOKEN=demo-token
  export BITBUCKET_WEBHOOK_SECRET="${BITBUCKET_WEBHOOK_SECRET:-demo-secret}"
  export BBSYNC_API_TOKENS="${BBSYNC_API_TOKENS:-demo-api-token}"
  for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$SIM_PORT/_sim/stats" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

alembic upgrade head
bbsync sync || echo "initial sync did not finish; the workers will retry on schedule" >&2
bbsync sync --activity || echo "pull requests and pipelines will follow on schedule" >&2
if [ -n "$SIM_PID" ]; then
  # The demo is real-time too: the simulator delivers signed webhooks to the web process.
  bbsync webhooks install --url "http://127.0.0.1:$PORT/webhooks/bitbucket"
  echo "webhook installed: push a change with POST ${BITBUCKET_API_URL%/2.0}/_sim/repos/<slug>/push (bitbucket_sim/README.md)"
fi

cat <<MSG

bbsync is starting:
  status        bbsync status
  budget        curl -H "Authorization: Bearer \$BBSYNC_API_TOKENS" http://localhost:$PORT/api/budget
  health        http://localhost:$PORT/api/repositories/<workspace>/<slug>/health (same token)
  API document  http://localhost:$PORT/api/openapi.json
  readiness     http://localhost:$PORT/readyz
  catalog       http://localhost:$PORT/catalog/entities.yaml
  metrics       http://localhost:$PORT/metrics
MSG
has_env BBSYNC_CATALOG_TOKENS && echo "  (catalog: send Authorization: Bearer <one of BBSYNC_CATALOG_TOKENS>)"
has_env BBSYNC_METRICS_TOKEN && echo "  (metrics: send Authorization: Bearer <BBSYNC_METRICS_TOKEN>)"
has_env BBSYNC_STATUS_BASIC_AUTH && echo "  (status page http://localhost:$PORT/: log in as in BBSYNC_STATUS_BASIC_AUTH)"

if [ -n "$SIM_PID" ]; then
  echo "  simulator     ${BITBUCKET_API_URL%/2.0}/_sim/stats"
  echo "  demo settings for another shell (e.g. for bbsync status):"
  echo "    export BITBUCKET_API_URL=$BITBUCKET_API_URL BITBUCKET_WORKSPACES=demo BITBUCKET_ACCESS_TOKEN=demo-token BBSYNC_API_TOKENS=$BBSYNC_API_TOKENS"
fi
echo
exec honcho start -f scripts/Procfile.dev
