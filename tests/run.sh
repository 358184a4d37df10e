#!/usr/bin/env bash
# The whole test suite, set-up included: the README's test command, run by .ci/run.
# Installs what a bare machine of this kind lacks (fuse3, stress-ng; pjdfstest, fsx,
# Node 24 and openclaw@2026.5.22 into a cache), then runs every test: differential,
# patterns, journal, pjdfstest, fsx, stress-ng and the real gateway end to end.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { [ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (mount tests need root and /dev/fuse)" >&2; exit 2; }; }
need_root
[ -e /dev/fuse ] || { echo "tests/run.sh: /dev/fuse is missing: load the fuse module (modprobe fuse)" >&2; exit 2; }
if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "== installing fuse3"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }
fi
if ! command -v stress-ng >/dev/null 2>&1; then
  echo "== installing stress-ng"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng; }
fi
command -v python3 >/dev/null || { echo "tests/run.sh: python3 is required" >&2; exit 2; }

export SESSIONFS_CACHE="${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}"
echo "== pjdfstest and fsx set-up"
bash tests/install-crate.sh pjdfstest 0.2.2
bash tests/install-crate.sh fsx 0.2.0
if [ -f tests/e2e/setup.sh ] && [ "${SESSIONFS_SKIP_E2E:-0}" != 1 -o "${CI:-}" = true ]; then
  echo "== OpenClaw gateway set-up (Node 24, openclaw@2026.5.22)"; bash tests/e2e/setup.sh
fi

echo "== cargo test --release"
cargo test --release -- --nocapture --test-threads="${TEST_THREADS:-2}"

left=$(grep -E '^sessionfs:' /proc/mounts || true)
if [ -n "$left" ]; then echo "tests left mounts behind:"; echo "$left"; exit 1; fi
echo "== all tests passed"
