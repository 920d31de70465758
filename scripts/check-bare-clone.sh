#!/usr/bin/env bash
# The repository stands alone: clone the committed HEAD into an empty temporary folder (nothing
# beside it — no ../shared, no node_modules, no generated client), then run there what a user
# runs: the README's quick start (`bash scripts/quickstart.sh --exit`), the typecheck and one test
# file. Uncommitted changes are not part of the check (a clone has only committed files).
#
# Env knobs:
#   BARE_DIR          parent folder for the clone [a fresh mktemp -d]; it must be empty
#   BARE_KEEP=1       keep the clone afterwards (default: removed)
#   BARE_TEST         test file(s) to run in the clone [test/backbones.test.ts: the shipped fixtures];
#                     BARE_TEST=all runs the whole `npm test`
#   BARE_DB_NAME      database the quick start creates and uses [iisan_bare_<pid>]; dropped afterwards
#   QUICKSTART_ARGS   arguments for the quick start [--exit]
# Ports: the quick start's API, embedding cache and worker health ports are three free ports
# (PORT / EMBEDDING_CACHE_PORT / WORKER_HEALTH_PORT, unless set), its Redis prefix is its own
# (QUEUE_PREFIX), so it runs beside other services and quick starts on the same machine.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\n==> [bare clone] %s\n' "$*"; }
seconds() { date +%s; }

PG_HOST=127.0.0.1
PG_PORT=5432
DB_NAME="${BARE_DB_NAME:-iisan_bare_$$}"
PREFIX="${QUEUE_PREFIX:-iisan-bare-$$}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"

if [[ -n "${BARE_DIR:-}" ]]; then
  mkdir -p "$BARE_DIR"
  [[ -z "$(ls -A "$BARE_DIR")" ]] || { echo "BARE_DIR $BARE_DIR is not empty" >&2; exit 2; }
  PARENT="$(cd "$BARE_DIR" && pwd)"
else
  PARENT="$(mktemp -d "${TMPDIR:-/tmp}/iisan-bare.XXXXXX")"
fi
CLONE="$PARENT/iisan"

cleanup() {
  local rc=$?
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS \"${DB_NAME}\" WITH (FORCE)" >/dev/null 2>&1 || true
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$REDIS" --scan --pattern "${PREFIX}:*" 2>/dev/null | xargs -r -n 500 redis-cli -u "$REDIS" del >/dev/null 2>&1 || true
  fi
  if [[ "${BARE_KEEP:-0}" == "1" ]]; then echo "clone kept in $CLONE"; else rm -rf "$PARENT"; fi
  exit "$rc"
}
trap cleanup EXIT

log "cloning $(git -C "$REPO" rev-parse --short HEAD) into $CLONE"
if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
  echo "note: the working tree has uncommitted changes; the clone checks HEAD only"
fi
git clone --quiet --no-hardlinks "$REPO" "$CLONE"
[[ "$(ls -A "$PARENT")" == "iisan" ]] || { echo "the clone's folder holds more than the clone" >&2; exit 1; }

cd "$CLONE"
log "no path outside the repository"
if git grep -nE '\.\./shared|/work/shared' -- . ':!scripts/check-bare-clone.sh'; then
  echo "the files above point outside the repository" >&2
  exit 1
fi

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
export PORT="${PORT:-$(free_port)}"
export EMBEDDING_CACHE_PORT="${EMBEDDING_CACHE_PORT:-$(free_port)}"
export WORKER_HEALTH_PORT="${WORKER_HEALTH_PORT:-$(free_port)}"
export DATABASE_URL="postgresql://postgres@${PG_HOST}:${PG_PORT}/${DB_NAME}"
export REDIS_URL="$REDIS"
export QUEUE_PREFIX="$PREFIX"
unset EMBEDDING_CACHE_URL INTERNAL_TOKEN ARTIFACTS_DIR TEXT_BACKBONE_DIR IMAGE_BACKBONE_DIR

# shellcheck disable=SC2086
log "bash scripts/quickstart.sh ${QUICKSTART_ARGS:---exit}  (database ${DB_NAME}, ports ${PORT}/${EMBEDDING_CACHE_PORT}/${WORKER_HEALTH_PORT}, prefix ${PREFIX})"
started=$(seconds)
bash scripts/quickstart.sh ${QUICKSTART_ARGS:---exit}
echo "quick start: $(( $(seconds) - started )) s"

started=$(seconds)
if [[ "${BARE_TEST:-}" == "all" ]]; then
  log "npm test"
  npm test
else
  TESTS="${BARE_TEST:-test/backbones.test.ts}"
  log "npm run typecheck && vitest run ${TESTS}"
  npm run typecheck
  # shellcheck disable=SC2086
  npx vitest run $TESTS
fi
echo "tests: $(( $(seconds) - started )) s"
log "passed"
