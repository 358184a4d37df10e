#!/usr/bin/env bash
# Installs the Rust pjdfstest (crates.io 0.2.2) into the test cache, once.
#
#   ${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin/pjdfstest
#
# Idempotent: does nothing when that binary is already there at the right version.
# tests/pjdfstest.rs looks for the binary at the same place (or $PJDFSTEST).
set -euo pipefail

VERSION=0.2.2
CACHE="${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}"
ROOT="$CACHE/cargo"
BIN="$ROOT/bin/pjdfstest"

if [ -x "$BIN" ] && grep -q "pjdfstest $VERSION " "$ROOT/.crates.toml" 2>/dev/null; then
  echo "pjdfstest $VERSION already installed: $BIN"
  exit 0
fi

command -v cargo >/dev/null || { echo "setup.sh: cargo is required" >&2; exit 2; }
mkdir -p "$ROOT"
echo "installing pjdfstest $VERSION into $ROOT"
# A separate target dir keeps the project's own target/ untouched and is reused on retries.
CARGO_TARGET_DIR="$CACHE/pjdfstest-target" \
  cargo install --locked --quiet --root "$ROOT" --version "=$VERSION" pjdfstest
# The build tree is only needed while building.
rm -rf "$CACHE/pjdfstest-target"
"$BIN" --help >/dev/null
echo "pjdfstest $VERSION installed: $BIN"
