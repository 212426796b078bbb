#!/bin/sh
# build-native.sh: compiles the native parts: the static cell init binary and the fscrypt, netlink and runtime N-API addons.
set -eu
cd "$(dirname "$0")/.."
mkdir -p build
gcc -static -Os -s -Wall -Wextra -o build/cell-init native/cell-init/cell-init.c
if [ -f native/fscrypt/fscrypt.c ]; then
  gcc -shared -fPIC -O2 -Wall -I/usr/include/node -o build/fscrypt.node native/fscrypt/fscrypt.c
fi
gcc -shared -fPIC -O2 -Wall -Wextra -I/usr/include/node -o build/netlink.node native/netlink/netlink.c
gcc -shared -fPIC -O2 -Wall -Wextra -I/usr/include/node -o build/runtime.node native/runtime/runtime.c
