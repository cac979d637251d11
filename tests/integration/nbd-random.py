#!/usr/bin/env python3
"""Random writes, trims and zero-writes through NBD, mirrored into a
reference file, with the reads checked against it along the way.

usage: nbd-random.py SOCKET REFERENCE OPS SEED [--no-flush-at-end] [--disjoint]
                     [--ready FILE]
       nbd-random.py SOCKET REFERENCE --verify

--disjoint: writes only, the i-th to [i * 64 KiB, (i + 1) * 64 KiB) (no byte
written twice), so that after a crash every byte is either its old or its
new value.  --ready FILE: create FILE once connected.

The export and the reference file must start equal; afterwards the export
must equal the reference (the caller compares with cmp after a flush)."""
import os
import random
import socket
import struct
import sys

IHAVEOPT, REQ = 0x49484156454F5054, 0x25609513


def recvn(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("server closed the connection")
        b += c
    return bytes(b)


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        g = recvn(self.s, 18)
        assert g[:16] == b"NBDMAGICIHAVEOPT"
        self.s.sendall(struct.pack(">I", 3))
        self.s.sendall(struct.pack(">QII", IHAVEOPT, 7, 6) + struct.pack(">IH", 0, 0))
        while True:
            _, _, typ, ln = struct.unpack(">QIII", recvn(self.s, 20))
            data = recvn(self.s, ln) if ln else b""
            if typ == 3 and struct.unpack(">H", data[:2])[0] == 0:
                self.size, self.flags = struct.unpack(">QH", data[2:12])
            elif typ != 3:
                assert typ == 1, hex(typ)
                break
        self.cookie = 0

    def cmd(self, typ, off, count, flags=0, payload=b""):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, self.cookie, off, count) + payload)
        magic, err, cookie = struct.unpack(">IIQ", recvn(self.s, 16))
        assert magic == 0x67446698 and cookie == self.cookie
        if err:
            raise OSError(err, "NBD error %d on command %d at %d+%d" % (err, typ, off, count))
        return recvn(self.s, count) if typ == 0 else None

    def read(self, off, n): return self.cmd(0, off, n)
    def write(self, off, data, fua=False): self.cmd(1, off, len(data), 1 if fua else 0, data)
    def flush(self): self.cmd(3, 0, 0)
    def trim(self, off, n): self.cmd(4, off, n)
    def zero(self, off, n, no_hole=False): self.cmd(6, off, n, 2 if no_hole else 0)
    def close(self):
        self.s.sendall(struct.pack(">IHHQQI", REQ, 0, 2, 0, 0, 0))
        self.s.close()


def main():
    sock, ref = sys.argv[1], sys.argv[2]
    c = Client(sock)
    if "--ready" in sys.argv:  # tell the caller we are connected
        open(sys.argv[sys.argv.index("--ready") + 1], "w").close()
    fd = os.open(ref, os.O_RDWR)
    size = os.fstat(fd).st_size
    assert c.size == size, (c.size, size)
    if sys.argv[3] == "--verify":
        for off in range(0, size, 4 << 20):
            n = min(4 << 20, size - off)
            if c.read(off, n) != os.pread(fd, n, off):
                sys.exit("export differs from the reference near offset %d" % off)
        c.close()
        return
    ops, rnd = int(sys.argv[3]), random.Random(int(sys.argv[4]))
    # Most activity in a few hot regions (so reads see earlier writes), some
    # anywhere; lengths from 1 byte to 256 KiB, aligned or not.
    hot = [rnd.randrange(0, size - (8 << 20)) for _ in range(4)]
    disjoint = "--disjoint" in sys.argv
    for i in range(ops):
        if disjoint:
            off, data = i * 65536, rnd.randbytes(65536)
            assert off + 65536 <= size
            c.write(off, data)
            os.pwrite(fd, data, off)
            continue
        base = rnd.choice(hot) if rnd.random() < 0.8 else 0
        span = (8 << 20) if base else size
        n = rnd.choice([1, 512, 4096, 4096, 8192, 65536, rnd.randrange(1, 262144)])
        off = base + rnd.randrange(0, span - n)
        if rnd.random() < 0.5:
            off -= off % 4096
        op = rnd.random()
        if op < 0.55:
            data = rnd.randbytes(n)
            c.write(off, data, fua=rnd.random() < 0.05)
            os.pwrite(fd, data, off)
        elif op < 0.7:
            c.trim(off, n)  # kiln's trim reads back zeros (docs/nbd.md)
            os.pwrite(fd, bytes(n), off)
        elif op < 0.85:
            c.zero(off, n, no_hole=rnd.random() < 0.5)
            os.pwrite(fd, bytes(n), off)
        else:
            got = c.read(off, n)
            if got != os.pread(fd, n, off):
                sys.exit("op %d: read at %d+%d differs from the reference" % (i, off, n))
        if rnd.random() < 0.01:
            c.flush()
    if "--no-flush-at-end" not in sys.argv:
        c.flush()
    c.close()
    os.close(fd)


main()
