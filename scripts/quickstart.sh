#!/bin/sh
# quickstart.sh: install what is missing, start Cleanroom in the background with embedded defaults, run a first job.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
node bin/cleanroom.js up --detach
node bin/cleanroom.js run -- sh -c 'echo "hello from cell $(hostname): $(id -un), $(nproc) cpu"'
