#!/usr/bin/env python3
"""The write patterns of OpenClaw 2026.5.22 (BRIEF.md "How transcripts are written"),
run against a sessions directory. Deterministic content so two runs can be compared.
Usage: openclaw_turn.py <sessions-dir> <session-id>"""
import json, os, subprocess, sys

d, sid = sys.argv[1], sys.argv[2]
t = os.path.join(d, sid + ".jsonl")
lock = t + ".lock"

def take_lock():
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    payload = json.dumps({"pid": 4242, "createdAt": "2026-11-22T00:00:00.000Z",
                          "maxHoldMs": 300000, "starttime": 123}, indent=2) + "\n"
    os.write(fd, payload.encode())
    return fd

def release_lock(fd):
    os.close(fd)
    with open(lock) as f:
        json.load(f)
    os.unlink(lock)

def append(obj):  # appendFileSync: open O_APPEND, one write, close
    fd = os.open(t, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (json.dumps(obj) + "\n").encode())
    os.close(fd)

def append_nofollow(obj):  # O_CREAT|O_APPEND|O_WRONLY|O_NOFOLLOW + fchmod(0600) + write
    fd = os.open(t, os.O_CREAT | os.O_APPEND | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    os.write(fd, (json.dumps(obj) + "\n").encode())
    os.close(fd)

# 1. lock hold and release, header + user line
fd = take_lock()
append({"type": "session", "version": 3, "id": sid, "timestamp": "t0", "cwd": "/w"})
append({"type": "message", "id": "u0000001", "parentId": None, "message": {"role": "user", "content": "hi"}})
release_lock(fd)
# 2. re-take over the "model call", assistant + custom lines
fd = take_lock()
append_nofollow({"type": "message", "id": "a0000001", "parentId": "u0000001",
                 "message": {"role": "assistant", "content": "hello"}})
append({"type": "custom", "customType": "model-snapshot", "id": "c0000001", "parentId": "a0000001"})
release_lock(fd)
# 3. in-place truncate + rewrite (header migration): same inode
with open(t, "rb") as f:
    lines = f.read().splitlines(keepends=True)
fd = os.open(t, os.O_WRONLY)
os.ftruncate(fd, 0)
os.write(fd, b"".join([lines[0].replace(b'"version": 3', b'"version": 4')] + lines[1:]))
os.close(fd)
# 4. temp file + os.replace by a python3 child, fsync + directory fsync
child = r'''
import os, sys
d, t = sys.argv[1], sys.argv[2]
tmp = os.path.join(d, "." + os.path.basename(t) + ".0123abcd.tmp")
data = open(t, "rb").read() + b'{"type":"compaction","id":"k0000001","parentId":"c0000001"}\n'
fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
os.write(fd, data); os.fchmod(fd, 0o600); os.fsync(fd); os.close(fd)
os.replace(tmp, t)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY); os.fsync(dfd); os.close(dfd)
'''
subprocess.run([sys.executable, "-c", child, d, t], check=True)
# 5. sessions.json via temp + rename + chmod 0600; directory chmod
store = os.path.join(d, "sessions.json")
tmp = os.path.join(d, ".fs-safe-replace.4242.0000-1111.tmp")
with open(tmp, "w") as f:
    json.dump({"agent:main:main": {"sessionId": sid, "updatedAt": 1}}, f, indent=2)
os.rename(tmp, store)
os.chmod(store, 0o600)
os.chmod(d, 0o700)
# 6. trajectory append and trajectory-path rewrite with O_TRUNC
traj = os.path.join(d, sid + ".trajectory.jsonl")
for i in range(20):
    append_obj = {"type": "trajectory", "i": i, "pad": "x" * 7000}
    fd = os.open(traj, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (json.dumps(append_obj) + "\n").encode())
    os.close(fd)
tp = os.path.join(d, sid + ".trajectory-path.json")
for i in range(3):
    fd = os.open(tp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, json.dumps({"path": os.path.basename(traj), "n": i}).encode())
    os.close(fd)
# 7. archive renames
for suffix in (".bak.2026-11-22T00-00-00.000Z", ".reset.2026-11-22T00-00-01.000Z"):
    with open(t, "rb") as src, open(t + ".tmpcopy", "wb") as dst:
        dst.write(src.read())
    os.rename(t + ".tmpcopy", t + suffix)
os.rename(t + ".reset.2026-11-22T00-00-01.000Z", t + ".deleted.2026-11-22T00-00-02.000Z")
print("ok")
