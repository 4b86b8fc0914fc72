#!/usr/bin/env bash
# Sets up (idempotently) and runs every test layer: lint, typecheck, unit, integration (root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x test/engines/install-deps.sh ]; then bash test/engines/install-deps.sh; fi
npx biome check src test scripts bench
# The layering (docs/architecture.md): an upward import or an import cycle fails the build.
npx depcruise src --config .dependency-cruiser.cjs
npx tsc --noEmit
node scripts/run-tests.mjs all
# The VM-mode engine tests again with the VM factory on (containers start from template clones).
KATA_TS_ENGINE_FACTORY=1 node scripts/run-tests.mjs integration engines-vm
# And with the VM cache: a `factory init` server keeps a VM ready; containers without NICs take it.
KATA_TS_ENGINE_FACTORY=cache node scripts/run-tests.mjs integration engines-vm
