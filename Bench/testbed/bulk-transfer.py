#!/usr/bin/env python3
"""Byte-exact bulk transfers for the offload tests (testbed only: 198.18.0.0/15, 2001:2::/48).

  bulk-transfer.py serve PORT
      Listens on [::]:PORT (both families). Per connection: reads a 16-byte header (size,
      seed), then `size` bytes; answers with the SHA-256 of what it read and its host name,
      then `size` bytes of its own (from the seed); closes.
  bulk-transfer.py send TARGET PORT SIZE [--rate BYTES_PER_S] [--seed N]
      Sends `size` pseudo-random bytes, checks the server's digest of them, reads the
      server's `size` bytes and checks them against what the seed gives. Prints one JSON
      line: {"ok", "node", "sent", "received", "seconds", "error"}. With --rate, paced
      (so that a test can change something mid-transfer). Bounded: 60 s at most.
"""
import hashlib
import json
import random
import socket
import socketserver
import struct
import sys
import time

CHUNK = 65536


def stream(seed, size):
    return random.Random(seed).randbytes(size)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(30)
        header = b""
        while len(header) < 16:
            part = s.recv(16 - len(header))
            if not part:
                return
            header += part
        size, seed = struct.unpack("!QQ", header)
        digest = hashlib.sha256()
        left = size
        while left:
            part = s.recv(min(CHUNK, left))
            if not part:
                return
            digest.update(part)
            left -= len(part)
        name = socket.gethostname().encode()[:32].ljust(32, b" ")
        s.sendall(digest.digest() + name)
        s.sendall(stream(seed ^ 1, size))
        s.shutdown(socket.SHUT_WR)


class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def send(target, port, size, rate, seed):
    started = time.monotonic()
    result = {"ok": False, "node": None, "sent": 0, "received": 0, "seconds": 0.0, "error": None}
    try:
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect((target, port))
        data = stream(seed, size)
        s.sendall(struct.pack("!QQ", size, seed))
        sent = 0
        while sent < size:
            n = s.send(data[sent:sent + CHUNK])
            sent += n
            result["sent"] = sent
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if time.monotonic() - started > 60:
                raise TimeoutError("transfer over 60 s")
        expected = hashlib.sha256(data).digest() + b""
        answer = b""
        while len(answer) < 64:
            part = s.recv(64 - len(answer))
            if not part:
                raise ConnectionError("closed before the digest")
            answer += part
        result["node"] = answer[32:].decode().strip()
        if answer[:32] != expected:
            raise ValueError("the server's digest of what it received differs")
        back = stream(seed ^ 1, size)
        got = bytearray()
        while len(got) < size:
            part = s.recv(min(CHUNK * 4, size - len(got)))
            if not part:
                raise ConnectionError(f"closed after {len(got)} of {size} bytes")
            got += part
        result["received"] = len(got)
        if bytes(got) != back:
            raise ValueError("the bytes received differ from what the server sent")
        result["ok"] = True
    except Exception as e:  # reported, not raised: the test reads the line
        result["error"] = f"{type(e).__name__}: {e}"
    result["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result), flush=True)


def main():
    if sys.argv[1] == "serve":
        Server(("::", int(sys.argv[2])), Handler).serve_forever()
    elif sys.argv[1] == "send":
        args = sys.argv[2:]
        rate = float(args[args.index("--rate") + 1]) if "--rate" in args else 0
        seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 7
        send(args[0], int(args[1]), int(args[2]), rate, seed)


if __name__ == "__main__":
    main()
