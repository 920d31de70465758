#!/usr/bin/env bash
# Quick start: install, prepare the database, start the services, import a sample of the
# Scientific dataset, train, and print recommendations. Options are passed to quickstart.ts
# (e.g. --users 3000 --epochs 10 --exit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
npm ci --no-audit --no-fund
npm run generate --silent
exec npx tsx scripts/quickstart.ts "$@"
