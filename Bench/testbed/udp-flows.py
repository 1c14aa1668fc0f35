#!/usr/bin/env python3
"""Many UDP flows through a VIP, and which node each reached (testbed only).

    udp-flows.py open  VIP PORT SOURCES FLOWS OUTFILE
    udp-flows.py check VIP PORT INFILE EVERY

`open` makes FLOWS flows, spread over the comma-separated SOURCES addresses (this host's),
each from its own source port (20000 up): two request/answer exchanges per flow (the LB
keeps a UDP flow, and syncs it, from its second datagram). The testbed's servers answer
"<node>:<payload>"; OUTFILE gets one line per flow: source, port, node. Requests go out
in batches of 500 and answers are awaited with a deadline, so the run is bounded.
`check` sends one more request on every EVERY-th flow of INFILE, from the same address and
port, and prints {"checked", "same", "moved", "unanswered"}: after a failover, a flow the
new active held goes to the node it had.
Only to the VIP given (198.18.0.0/15), only from this host's addresses.
"""
import json, select, socket, sys, time

def exchange(flows, vip, port, payload, deadline_s=2.0):
    """Sends payload on every (source, port) of flows; returns {index: node or None}."""
    out = {}
    for start in range(0, len(flows), 500):
        batch = flows[start:start + 500]
        socks = {}
        for i, (src, sport) in enumerate(batch, start):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src, sport))
            s.connect((vip, port))
            s.setblocking(False)
            socks[s] = i
        for attempt in range(3):
            for s, i in socks.items():
                if i not in out:
                    try:
                        s.send(payload)
                    except BlockingIOError:
                        pass
            end = time.time() + deadline_s / 3
            while time.time() < end and any(i not in out for i in socks.values()):
                ready, _, _ = select.select([s for s, i in socks.items() if i not in out], [], [], 0.05)
                for s in ready:
                    try:
                        data = s.recv(2048)
                    except (BlockingIOError, ConnectionRefusedError):
                        continue
                    out[socks[s]] = data.split(b":", 1)[0].decode()
            if all(i in out for i in socks.values()):
                break
        for s, i in socks.items():
            out.setdefault(i, None)
            s.close()
    return out

mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "open":
    sources, count, outfile = sys.argv[4].split(","), int(sys.argv[5]), sys.argv[6]
    assert count <= 45000 * len(sources), "at most 45,000 flows per source address"
    flows = [(sources[i % len(sources)], 20000 + i // len(sources)) for i in range(count)]
    first = exchange(flows, vip, port, b"first")
    second = exchange(flows, vip, port, b"second")
    kept = 0
    with open(outfile, "w") as f:
        for i, (src, sport) in enumerate(flows):
            if first[i] and first[i] == second[i]:
                f.write(f"{src} {sport} {first[i]}\n")
                kept += 1
    print(json.dumps({"flows": count, "answered_twice_alike": kept}))
elif mode == "check":
    infile, every = sys.argv[4], int(sys.argv[5])
    rows = [l.split() for l in open(infile)][::every]
    got = exchange([(r[0], int(r[1])) for r in rows], vip, port, b"after")
    same = sum(1 for i, r in enumerate(rows) if got[i] == r[2])
    unanswered = sum(1 for i in range(len(rows)) if got[i] is None)
    print(json.dumps({"checked": len(rows), "same": same, "moved": len(rows) - same - unanswered, "unanswered": unanswered}))
else:
    sys.exit("mode: open or check")
