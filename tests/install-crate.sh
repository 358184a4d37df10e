#!/usr/bin/env bash
# Installs a peer-suite tool from crates.io into the test cache, once:
#
#   bash tests/install-crate.sh <crate> <version>
#   -> ${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin/<crate>
#
# Idempotent: does nothing when that binary is already there at that version. The
# tests look for it at the same place (tests/common/mod.rs `cached_tool`). Used for
# pjdfstest 0.2.2 and fsx 0.2.0.
set -euo pipefail

NAME="${1:?usage: install-crate.sh <crate> <version>}"
VERSION="${2:?usage: install-crate.sh <crate> <version>}"
CACHE="${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}"
ROOT="$CACHE/cargo"
BIN="$ROOT/bin/$NAME"

if [ -x "$BIN" ] && grep -q "\"$NAME $VERSION " "$ROOT/.crates.toml" 2>/dev/null; then
  echo "$NAME $VERSION already installed: $BIN"
  exit 0
fi

command -v cargo >/dev/null || { echo "install-crate.sh: cargo is required" >&2; exit 2; }
mkdir -p "$ROOT"
echo "installing $NAME $VERSION into $ROOT"
# A separate target dir keeps the project's own target/ untouched and is reused on retries.
CARGO_TARGET_DIR="$CACHE/$NAME-target" \
  cargo install --locked --quiet --root "$ROOT" --version "=$VERSION" "$NAME"
# The build tree is only needed while building.
rm -rf "$CACHE/$NAME-target"
"$BIN" --help >/dev/null
echo "$NAME $VERSION installed: $BIN"
