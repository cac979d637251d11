#!/usr/bin/env python3
"""Protocol abuse against a running NBD server on a unix socket: every case
must end in the correct error reply or a clean close, and the server must
keep serving.  usage: nbd-abuse.py SOCKET EXPORT_NAME EXPORT_SIZE"""
import socket
import struct
import sys

SOCK, NAME, SIZE = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513
failures = 0


def check(cond, what):
    global failures
    print(("ok" if cond else "FAIL") + " - " + what)
    if not cond:
        failures += 1


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return b


def closed(s):
    """True when the server closed the connection (EOF or reset)."""
    s.settimeout(10)
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def dial():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    s.settimeout(10)
    g = recvn(s, 18)
    assert g[:8] == b"NBDMAGIC" and g[8:16] == b"IHAVEOPT", g
    return s


def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)


def opt_reply(s):
    h = recvn(s, 20)
    magic, o, typ, ln = struct.unpack(">QIII", h)
    assert magic == 0x3E889045565A9
    return typ, recvn(s, ln) if ln else b""


def negotiate(structured=True):
    s = dial()
    s.sendall(struct.pack(">I", 3))
    if structured:
        opt(s, 8)
        assert opt_reply(s)[0] == 1
    opt(s, 7, struct.pack(">I", 0) + struct.pack(">H", 0))
    while True:
        typ, _ = opt_reply(s)
        if typ != 3:
            assert typ == 1, typ
            return s


def req(s, typ, off, count, flags=0, cookie=1, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, count) + payload)


def reply_error(s):
    """The error of one reply (simple or structured, discarding data)."""
    m = recvn(s, 4)
    (magic,) = struct.unpack(">I", m)
    if magic == 0x67446698:
        err, cookie = struct.unpack(">IQ", recvn(s, 12))
        return err
    assert magic == 0x668E33EF, hex(magic)
    err = 0
    while True:
        flags, typ, cookie, ln = struct.unpack(">HHQI", recvn(s, 16))
        p = recvn(s, ln) if ln else b""
        if typ & 0x8000:
            err = struct.unpack(">I", p[:4])[0]
        if flags & 1:
            return err
        assert recvn(s, 4) == struct.pack(">I", 0x668E33EF)


ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN = 0x80000001, 0x80000003, 0x80000006

# --- handshake ---
s = dial(); s.sendall(struct.pack(">I", 0xFFFF)); check(closed(s), "unknown client flags: closed")
s = dial(); s.sendall(struct.pack(">I", 3) + b"NOTMAGIC" + b"\0" * 8); check(closed(s), "bad option magic: closed")
s = dial(); s.sendall(struct.pack(">I", 3)); s.sendall(struct.pack(">QII", IHAVEOPT, 7, 1 << 30)); check(closed(s), "a 1 GiB option: closed")
s = dial(); s.sendall(struct.pack(">IHHQQI", REQ, 0, 0, 1, 0, 512)); check(closed(s), "a request before negotiation: closed")
s = dial(); s.sendall(struct.pack(">I", 3))
opt(s, 0x7777, b"junk"); check(opt_reply(s)[0] == ERR_UNSUP, "unknown option: NBD_REP_ERR_UNSUP")
opt(s, 3, b"x"); check(opt_reply(s)[0] == ERR_INVALID, "LIST with data: NBD_REP_ERR_INVALID")
opt(s, 7, struct.pack(">I", 5) + b"other" + struct.pack(">H", 0)); check(opt_reply(s)[0] == ERR_UNKNOWN, "GO to an unknown export: NBD_REP_ERR_UNKNOWN")
opt(s, 7, struct.pack(">I", 100)); check(opt_reply(s)[0] == ERR_INVALID, "GO with a name past the data: NBD_REP_ERR_INVALID")
opt(s, 10, struct.pack(">I", 0)); check(opt_reply(s)[0] == ERR_INVALID, "SET_META_CONTEXT without structured replies: invalid")
opt(s, 7, struct.pack(">I", len(NAME)) + NAME + struct.pack(">H", 0))
while True:
    t, _ = opt_reply(s)
    if t != 3:
        break
check(t == 1, "after all that, GO by name works")
req(s, 0, 0, 4096); check(reply_error(s) == 0, "and a read succeeds")
s.close()
s = dial(); s.sendall(struct.pack(">I", 3)); opt(s, 2); check(opt_reply(s)[0] == 1 and closed(s), "ABORT: ACK, then closed")
s = dial(); s.sendall(struct.pack(">I", 1) + struct.pack(">QII", IHAVEOPT, 1, 4) + b"nope"); check(closed(s), "EXPORT_NAME of an unknown export: closed")
s = dial(); s.sendall(struct.pack(">I", 3)); s.sendall(b"IHAVEOPT\0\0"); s.close()  # mid-option
check(True, "disconnect in the middle of an option")

# --- transmission ---
s = negotiate()
req(s, 0, SIZE - 512, 1024); check(reply_error(s) == 22, "read past the end: EINVAL")
req(s, 0, (1 << 64) - 512, 1024); check(reply_error(s) == 22, "offset wrapping around: EINVAL")
req(s, 0, 0, (32 << 20) + 1); check(reply_error(s) == 22, "read over 32 MiB: EINVAL")
req(s, 0, 0, 0); check(reply_error(s) == 22, "zero-length read: EINVAL")
req(s, 99, 0, 4096); check(reply_error(s) == 22, "unknown command: EINVAL")
req(s, 0, 0, 4096, flags=0x8000); check(reply_error(s) == 22, "unknown flag: EINVAL")
req(s, 1, 0, 4096, payload=b"\xff" * 4096); check(reply_error(s) == 1, "write to a snapshot: EPERM (payload consumed)")
req(s, 4, 0, 4096); check(reply_error(s) == 1, "trim of a snapshot: EPERM")
req(s, 6, 0, 4096); check(reply_error(s) == 1, "write zeroes to a snapshot: EPERM")
req(s, 7, 0, 4096); check(reply_error(s) == 22, "block status without a context: EINVAL")
req(s, 3, 0, 0); check(reply_error(s) == 0, "flush: success")
req(s, 5, 0, 1 << 20); check(reply_error(s) == 0, "cache: success")
req(s, 0, 0, 4096); check(reply_error(s) == 0, "the connection still serves reads")
req(s, 1, 0, 64 << 20); check(closed(s), "a 64 MiB WRITE header: closed")

s = negotiate(structured=False)
req(s, 0, SIZE, 1); check(reply_error(s) == 22, "simple replies: read past the end is EINVAL without data")
s.sendall(b"\x25\x60\x95\x14" + b"\0" * 24); check(closed(s), "bad request magic: closed")

s = negotiate(); s.sendall(struct.pack(">IHH", REQ, 0, 0)); s.close(); check(True, "disconnect in the middle of a request header")
s = negotiate(); req(s, 1, 0, 65536); s.sendall(b"x" * 1000); s.close(); check(True, "disconnect in the middle of a WRITE payload")
# Many reads, then hang up without reading a single reply.
# (The server stops reading while its replies are not read: the sends may
# block, which is backpressure, not a failure.)
s = negotiate()
s.settimeout(2)
try:
    for i in range(256):
        req(s, 0, (i * 65536) % (SIZE - 65536), 65536, cookie=i)
except socket.timeout:
    pass
s.close(); check(True, "up to 256 reads in flight, then hang up")

s = negotiate(); req(s, 0, 0, 4096); check(reply_error(s) == 0, "a fresh connection is served")
req(s, 2, 0, 0); check(closed(s), "DISC: closed")
sys.exit(1 if failures else 0)
