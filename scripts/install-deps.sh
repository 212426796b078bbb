#!/bin/sh
# install-deps.sh: installs what Cleanroom needs on Debian 12 (as root), then builds. Idempotent and quick when done.
set -eu
cd "$(dirname "$0")/.."

# Node.js >= 20 (Debian 12's own is 18): machines of this kind carry it; say so plainly where it is missing.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "Cleanroom needs Node.js >= 20 (found: $(node --version 2>/dev/null || echo none)); Debian 12's nodejs is 18." >&2
  echo "Install Node.js 20 (e.g. the nodejs 20 package your distribution channel offers), then run this again." >&2
  exit 1
fi

missing=""
want() { # want COMMAND-OR-PATH PACKAGE
  case "$1" in
    /*) [ -e "$1" ] || missing="$missing $2" ;;
    *) command -v "$1" >/dev/null 2>&1 || missing="$missing $2" ;;
  esac
}
want runc runc
want runsc runsc
want crun crun
want nft nftables
want ip iproute2
want mkfs.ext4 e2fsprogs
want losetup mount
want tini tini
want gcc gcc
want /usr/include/stdio.h libc6-dev
want /usr/bin/python3 python3
want openssl openssl
want ps procps
want sysctl procps
want useradd passwd
want chromium chromium # the console's browser tests
want skopeo skopeo                       # image imports: registry transport, archive and layout conversion
want docker-registry docker-registry     # tests: a real registry on 127.0.0.1 (its service is never started)
want htpasswd apache2-utils              # tests: the registry's bcrypt htpasswd file
want /bin/busybox busybox-static         # tests (and the default image, scripts/build-base-image.ts): a static busybox
want tmux tmux  # drives `cleanroom sandbox shell` in a real terminal in the tests
want /usr/lib/postgresql/15/bin/initdb postgresql  # tests: a real PostgreSQL 15 for the PostgreSQL store (test/support/postgres.ts)
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# The default image (build/images/base, an OCI layout) from packages on this machine: quickstart needs no registry.
node dist/scripts/build-base-image.js build/images/base >/dev/null
