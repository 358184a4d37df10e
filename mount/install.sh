#!/bin/sh
# Install the built binary, the mount(8) helper and the systemd unit (run as root
# from the repository after `cargo build --release`).
set -eu
cd "$(dirname "$0")/.."
[ -x target/release/sessionfs ] || { echo "build first: cargo build --release" >&2; exit 1; }
install -m 0755 target/release/sessionfs /usr/local/bin/sessionfs
install -m 0755 mount/mount.fuse.sessionfs /sbin/mount.fuse.sessionfs
install -m 0644 systemd/sessionfs@.service /etc/systemd/system/sessionfs@.service
install -m 0644 systemd/sessionfs-all@.service /etc/systemd/system/sessionfs-all@.service
command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload || true
echo "installed /usr/local/bin/sessionfs, /sbin/mount.fuse.sessionfs, /etc/systemd/system/sessionfs@.service and sessionfs-all@.service (user units: systemd/user/)"
