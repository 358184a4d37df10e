#!/usr/bin/env bash
# Installs fsx (the Rust File System eXerciser, crates.io 0.2.0) into the test cache, once.
#
#   ${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin/fsx
#
# Idempotent: does nothing when that binary is already there at the right version.
# tests/fsx.rs looks for the binary at the same place (or $FSX).
set -euo pipefail

VERSION=0.2.0
CACHE="${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}"
ROOT="$CACHE/cargo"
BIN="$ROOT/bin/fsx"

if [ -x "$BIN" ] && grep -q "fsx $VERSION " "$ROOT/.crates.toml" 2>/dev/null; then
  echo "fsx $VERSION already installed: $BIN"
  exit 0
fi

command -v cargo >/dev/null || { echo "setup.sh: cargo is required" >&2; exit 2; }
mkdir -p "$ROOT"
echo "installing fsx $VERSION into $ROOT"
CARGO_TARGET_DIR="$CACHE/fsx-target" \
  cargo install --locked --quiet --root "$ROOT" --version "=$VERSION" fsx
rm -rf "$CACHE/fsx-target"
"$BIN" --help >/dev/null
echo "fsx $VERSION installed: $BIN"
