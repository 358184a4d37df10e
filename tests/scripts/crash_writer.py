#!/usr/bin/env python3
"""One transcript writer for tests/crash.rs: appends OpenClaw-shaped JSONL entries to
PATH, one write() per line on an O_APPEND fd, until a write fails (the daemon was
killed) or COUNT lines are written. After each write() that returned the full length it
appends '<seq>\\n' to ACKS (outside the mount): the acknowledged lines.

Sizes: a third ~1,692 B (the torn line of issue 12), the rest 120 B .. 4.5 KB, so lines
cross page boundaries in every position. Style: REOPEN=1 opens, writes and closes per
line (appendFile: O_WRONLY|O_APPEND|O_CREAT); REOPEN=0 keeps one fd open."""
import json, os, random, sys, time

path, acks_path, writer, count, reopen = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                          int(sys.argv[4]), sys.argv[5] == "1")
rnd = random.Random(writer * 7919 + int(time.time()))
acks = os.open(acks_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
fd = None
parent = None
seq = 0
try:
    while seq < count:
        target = 1692 if rnd.random() < 1 / 3 else rnd.randint(120, 4500)
        entry = {
            "type": "message",
            "id": "%08x" % rnd.getrandbits(32),
            "parentId": parent,
            "timestamp": "2026-12-06T07:00:00.000Z",
            "w": writer,
            "seq": seq,
            "message": {"role": "assistant", "provider": "test", "model": "crash",
                        "content": [{"type": "text", "text": ""}]},
        }
        base = len(json.dumps(entry, separators=(",", ":"))) + 1
        entry["message"]["content"][0]["text"] = "x" * max(0, target - base)
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        if fd is None:
            fd = os.open(path, flags, 0o600)
        n = os.write(fd, line)
        if n != len(line):
            break
        os.write(acks, b"%d\n" % seq)
        parent = entry["id"]
        seq += 1
        if reopen:
            os.close(fd)
            fd = None
except OSError:
    pass  # ENOTCONN / ECONNABORTED: the daemon is gone
