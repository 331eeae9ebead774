#!/usr/bin/env bash
# `make run`: migrate a local SQLite database and start web, worker and beat together.
# With no Bitbucket credentials configured, first start the simulator with a demo workspace
# and point bbsync at it: Bitbucket Cloud, or Data Center with BBSYNC_DEMO_FLAVOR=datacenter.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_FLAVOR="${BBSYNC_DEMO_FLAVOR:-cloud}"
case "$DEMO_FLAVOR" in
  cloud | datacenter) ;;
  *)
    echo "make run: BBSYNC_DEMO_FLAVOR must be cloud or datacenter, not '$DEMO_FLAVOR'" >&2
    exit 2
    ;;
esac

has_env() { [ -n "${!1:-}" ] || { [ -f .env ] && grep -Eq "^$1=.+" .env; }; }

export DATABASE_URL="${DATABASE_URL:-sqlite:///bbsync.db}"
export PORT="${PORT:-5000}"
SIM_PID=""
HONCHO_PID=""
DEMO_ENV=".env.demo"
cleanup() {
  trap - EXIT INT TERM
  set +e
  if [ -n "$HONCHO_PID" ]; then kill -TERM "$HONCHO_PID" 2>/dev/null; wait "$HONCHO_PID"; fi
  if [ -n "$SIM_PID" ]; then
    kill "$SIM_PID" 2>/dev/null
    wait "$SIM_PID"
    rm -f "$DEMO_ENV"
  fi
}
# Ctrl-C and a plain SIGTERM alike stop everything this script started.
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

port_free() {
  python -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}
require_port() {
  port_free "$1" || { echo "make run: port $1 ($2) is already in use; stop what listens there or set $3" >&2; exit 1; }
}
require_port "$PORT" web PORT

if ! redis-cli -u "${REDIS_URL:-redis://localhost:6379/0}" ping >/dev/null 2>&1; then
  echo "Redis is not answering at ${REDIS_URL:-redis://localhost:6379/0}; start it first" >&2
  exit 1
fi

# The same variables as app/config.py's CREDENTIAL_VARIABLES: any of them is a real source.
if ! has_env BITBUCKET_ACCESS_TOKEN && ! has_env BITBUCKET_API_TOKEN \
   && ! has_env BITBUCKET_OAUTH_CLIENT_ID && ! has_env BITBUCKET_DC_URL; then
  SIM_PORT="${SIM_PORT:-7990}"
  require_port "$SIM_PORT" simulator SIM_PORT
  SIM_URL="http://127.0.0.1:$SIM_PORT"
  export BITBUCKET_WEBHOOK_SECRET="${BITBUCKET_WEBHOOK_SECRET:-demo-secret}"
  export BBSYNC_API_TOKENS="${BBSYNC_API_TOKENS:-demo-api-token}"
  if [ "$DEMO_FLAVOR" = datacenter ]; then
    echo "No Bitbucket credentials set: starting the Data Center simulator on port $SIM_PORT"
    python -m bitbucket_sim --flavor datacenter --port "$SIM_PORT" --workspace demo \
      --repos "${BBSYNC_DEMO_REPOS:-60}" --seed 7 --access-token demo-token &
    SIM_PID=$!
    # A Data Center source only: its projects are the workspaces ({host}/{KEY}), no Cloud one.
    export BITBUCKET_WORKSPACES=
    export BITBUCKET_DC_URL="$SIM_URL"
    export BITBUCKET_DC_TOKEN=demo-token
    SOURCE_SETTINGS="BITBUCKET_DC_URL=$BITBUCKET_DC_URL
BITBUCKET_DC_TOKEN=demo-token"
  else
    echo "No Bitbucket credentials set: starting the simulator on port $SIM_PORT (workspace demo)"
    python -m bitbucket_sim --port "$SIM_PORT" --workspace demo --repos "${BBSYNC_DEMO_REPOS:-60}" --seed 7 \
      --access-token demo-token &
    SIM_PID=$!
    export BITBUCKET_API_URL="$SIM_URL/2.0"
    export BITBUCKET_WORKSPACES=demo
    export BITBUCKET_ACCESS_TOKEN=demo-token
    SOURCE_SETTINGS="BITBUCKET_API_URL=$BITBUCKET_API_URL
BITBUCKET_WORKSPACES=demo
BITBUCKET_ACCESS_TOKEN=demo-token"
  fi
  for _ in $(seq 50); do
    curl -fs "$SIM_URL/_sim/stats" >/dev/null 2>&1 && break
    sleep 0.2
  done
  kill -0 "$SIM_PID" 2>/dev/null || { echo "make run: the simulator did not start" >&2; exit 1; }
  # Every bbsync command in this folder (another shell's `bbsync status`) reads these while
  # the demo runs (app/config.py: when no credential variable is set there); removed when it
  # stops.
  cat >"$DEMO_ENV" <<DEMO
# written by make run while the demo runs; removed when it stops
DATABASE_URL=$DATABASE_URL
REDIS_URL=${REDIS_URL:-redis://localhost:6379/0}
$SOURCE_SETTINGS
BITBUCKET_WEBHOOK_SECRET=$BITBUCKET_WEBHOOK_SECRET
BBSYNC_API_TOKENS=$BBSYNC_API_TOKENS
DEMO
elif [ -n "${BBSYNC_DEMO_FLAVOR:-}" ]; then
  echo "make run: Bitbucket credentials are set, so no demo: BBSYNC_DEMO_FLAVOR is not used" >&2
fi

bbsync migrate
bbsync sync || echo "initial sync did not finish; the workers will retry on schedule" >&2
bbsync sync --activity || echo "pull requests and pipelines will follow on schedule" >&2
if [ -n "$SIM_PID" ]; then
  # The demo is real-time too: the simulator delivers signed webhooks to the web process.
  if [ "$DEMO_FLAVOR" = datacenter ]; then
    bbsync webhooks install --url "http://127.0.0.1:$PORT/webhooks/bitbucket-dc"
  else
    bbsync webhooks install --url "http://127.0.0.1:$PORT/webhooks/bitbucket"
  fi
  echo "webhook installed: push a change with POST $SIM_URL/_sim/repos/<slug>/push (bitbucket_sim/README.md)"
fi

echo
echo "bbsync is starting:"
if [ -n "$SIM_PID" ] && [ "$DEMO_FLAVOR" = datacenter ]; then
  echo "  source        Bitbucket Data Center (the simulator's demo projects; workspaces ${SIM_URL#http://}/<KEY>)"
fi
cat <<MSG
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
  echo "  simulator     $SIM_URL/_sim/stats"
  echo "  demo settings are in $DEMO_ENV while the demo runs: every bbsync command in this"
  echo "  folder reads them (another shell: . .venv/bin/activate && bbsync status)"
fi
echo
honcho start -f scripts/Procfile.dev &
HONCHO_PID=$!
wait "$HONCHO_PID"
