#!/usr/bin/env python3
"""Connections a hostile client holds on the control API, for the management tests.

  api-connections.py idle HOST PORT COUNT SECONDS
      open COUNT TCP connections that never send a byte, print "open N", hold them for
      SECONDS, then print "still-open N" (those the server has not closed) and exit.
  api-connections.py slow HOST PORT INTERVAL LIMIT
      send a request head one byte every INTERVAL seconds; print "closed-after S" when
      the server closes the connection, or "still-open" after LIMIT seconds.
  api-connections.py keepalive HOST PORT LIMIT
      send one whole request, read its answer, then send nothing more; print
      "closed-after S" (from the answer) when the server closes the connection, or
      "still-open" after LIMIT seconds.

Bounded in count and in time; only the address it is given (the LB's loopback).
"""
import resource
import select
import socket
import sys
import time


def idle(host, port, count, seconds):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    conns, refused = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((host, port))
            s.setblocking(False)
            conns.append(s)
        except OSError:
            refused += 1
            s.close()
    print(f"open {len(conns)} refused {refused}", flush=True)
    time.sleep(seconds)
    still = 0
    for s in conns:
        try:
            still += 1 if s.recv(1) is None else 0
        except BlockingIOError:
            still += 1  # nothing to read and not closed: still open
        except OSError:
            pass
        s.close()
    print(f"still-open {still}", flush=True)


def slow(host, port, interval, limit):
    s = socket.create_connection((host, port), timeout=2)
    head = b"GET /v1/status HTTP/1.1\r\nHost: fulcrum\r\nX-Slow: " + b"a" * 10000
    started = time.monotonic()
    for b in head:
        if time.monotonic() - started > limit:
            print("still-open", flush=True)
            return
        try:
            s.send(bytes([b]))
        except OSError:
            break
        r, _, _ = select.select([s], [], [], interval)
        if r:
            try:
                if s.recv(4096) == b"":
                    break
            except OSError:
                break
    print(f"closed-after {time.monotonic() - started:.2f}", flush=True)


def keepalive(host, port, limit):
    s = socket.create_connection((host, port), timeout=limit)
    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
    answer = s.recv(65536)
    answered = time.monotonic()
    if not answer.startswith(b"HTTP/1.1 "):
        print("no-answer", flush=True)
        return
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        print("still-open", flush=True)
        return
    except OSError:
        pass
    print(f"closed-after {time.monotonic() - answered:.2f}", flush=True)


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "idle":
        idle(host, port, int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "keepalive":
        keepalive(host, port, float(sys.argv[4]))
    else:
        slow(host, port, float(sys.argv[4]), float(sys.argv[5]))
