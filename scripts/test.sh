#!/usr/bin/env bash
# Sets up (idempotently) and runs every test layer: lint, typecheck, unit, integration (root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x test/engines/install-deps.sh ]; then bash test/engines/install-deps.sh; fi
npx biome check src test scripts bench
npx tsc --noEmit
node scripts/run-tests.mjs all
