#!/bin/sh
# build-native.sh: compiles the native parts: the static cell init binary and the fscrypt, netlink, runtime and mounts N-API addons.
set -eu
cd "$(dirname "$0")/.."
mkdir -p build
# Node-API headers from the npm package (a dev dependency): a fresh machine need not carry Node's own headers.
NAPI=node_modules/node-api-headers/include
[ -f "$NAPI/node_api.h" ] || NAPI=/usr/include/node
gcc -static -Os -s -Wall -Wextra -o build/cell-init native/cell-init/cell-init.c native/cell-init/supervisor.c native/cell-init/file-ops.c
if [ -f native/fscrypt/fscrypt.c ]; then
  gcc -shared -fPIC -O2 -Wall -I"$NAPI" -o build/fscrypt.node native/fscrypt/fscrypt.c
fi
gcc -shared -fPIC -O2 -Wall -Wextra -I"$NAPI" -o build/netlink.node native/netlink/netlink.c
gcc -shared -fPIC -O2 -Wall -Wextra -I"$NAPI" -o build/runtime.node native/runtime/runtime.c
gcc -shared -fPIC -O2 -Wall -Wextra -I"$NAPI" -o build/mounts.node native/mounts/mounts.c
