#!/usr/bin/env python3
"""One O_APPEND writer: appends N lines of log-uniform size (100 B .. 300 KB) to a file,
one write() per line, reopening the file every 50 lines (both OpenClaw append styles).
Line: '<writer> <seq> <len> <payload>\n', the payload one repeated letter."""
import math, os, random, sys

path, writer, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(writer)
letter = chr(ord('a') + writer % 26).encode()
fd = None
for seq in range(count):
    if seq % 50 == 0:
        if fd is not None:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    size = int(100 * math.exp(rnd.random() * math.log(3000)))  # 100 B .. 300 KB
    head = f"{writer} {seq} {size} ".encode()
    line = head + letter * max(1, size - len(head) - 1) + b"\n"
    n = os.write(fd, line)
    assert n == len(line), (n, len(line))
os.close(fd)
