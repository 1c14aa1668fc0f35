#!/usr/bin/env python3
"""The client's view of a failover (testbed only): a UDP request to TARGET:PORT every
INTERVAL seconds for SECONDS, each with a sequence number; prints JSON with how many were
sent and answered and the longest run of unanswered requests in milliseconds (the outage
the client saw), measured from the first unanswered request to the next answered one.

    failover-probe.py TARGET PORT SECONDS [INTERVAL]
Prints {"ready": true} once started, so the caller can inject the fault.
"""
import json, select, socket, sys, time

target, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.002
s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
sent = {}      # sequence -> send time
answered = set()
print(json.dumps({"ready": True}), flush=True)
start = time.monotonic()
nxt = start
seq = 0
while True:
    now = time.monotonic()
    if now - start >= seconds + 0.5:
        break
    if now >= nxt and now - start < seconds:
        seq += 1
        sent[seq] = now
        try:
            s.sendto(b"probe %d\n" % seq, (target, port))
        except OSError:
            pass
        nxt += interval
    r, _, _ = select.select([s], [], [], max(0.0, min(nxt - time.monotonic(), 0.002)))
    if r:
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            parts = data.split()
            for i, p in enumerate(parts):
                if p.endswith(b"probe") and i + 1 < len(parts):
                    try:
                        answered.add(int(parts[i + 1]))
                    except ValueError:
                        pass
# The longest run of unanswered requests, from its first request to the next answered one.
worst = 0.0
run_start = None
for q in range(1, seq + 1):
    if q not in answered:
        if run_start is None:
            run_start = sent[q]
    elif run_start is not None:
        worst = max(worst, sent[q] - run_start)
        run_start = None
if run_start is not None:
    worst = max(worst, sent[seq] - run_start)
print(json.dumps({"sent": seq, "answered": len(answered), "outage_ms": round(worst * 1000, 1)}), flush=True)
