#!/usr/bin/env bash
# Starts the local PostgreSQL and Redis if they are down (the commands in docs/DEVELOPMENT.md).
# On a machine where they run elsewhere, set DATABASE_URL / REDIS_URL and this does nothing.
set -euo pipefail
if [[ -z "${DATABASE_URL:-}" ]] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if [[ -z "${REDIS_URL:-}" ]] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
