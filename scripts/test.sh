#!/bin/sh
# test.sh: the whole test suite (unit, integration, security), as root, against the real runtimes.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
files=$(find dist/test -name '*.test.js' | sort)
exec node --test --test-concurrency=1 --test-timeout=600000 $files
