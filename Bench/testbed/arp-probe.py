#!/usr/bin/env python3
"""Who answers for an address (testbed only): an ARP request for TARGET every INTERVAL
seconds for SECONDS, broadcast from INTERFACE, and every ARP reply for TARGET recorded by
the MAC that sent it. Two MACs in one run is two LBs answering for one VIP.

    arp-probe.py INTERFACE TARGET SECONDS [INTERVAL]
Prints {"ready": true} once its socket is open, then at the end one JSON line:
{"requests": N, "macs": {MAC: replies}, "rounds": {MAC: rounds it answered in},
 "both": rounds in which more than one MAC answered}.
"""
import json, select, socket, struct, sys, time

ifname, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
ETH_P_ARP = 0x0806
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
s.bind((ifname, ETH_P_ARP))
s.setblocking(False)
mine = open(f"/sys/class/net/{ifname}/address").read().strip()
my_mac = bytes.fromhex(mine.replace(":", ""))
# The sender address: the interface's first IPv4 address (ARP probes may also use 0.0.0.0,
# but a request from a real address is what a client sends).
import subprocess
out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", ifname], capture_output=True, text=True).stdout.split()
my_ip = socket.inet_aton(out[out.index("inet") + 1].split("/")[0]) if "inet" in out else bytes(4)
tip = socket.inet_aton(target)
request = (b"\xff" * 6 + my_mac + struct.pack("!H", ETH_P_ARP)
           + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + my_mac + my_ip + bytes(6) + tip)
macs, rounds, both = {}, {}, 0
print(json.dumps({"ready": True}), flush=True)
start = time.monotonic()
requests = 0
while time.monotonic() - start < seconds:
    s.send(request)
    requests += 1
    seen = set()
    deadline = time.monotonic() + interval
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        while True:
            try:
                frame = s.recv(2048)
            except BlockingIOError:
                break
            if len(frame) < 42 or frame[12:14] != b"\x08\x06":
                continue
            op = struct.unpack("!H", frame[20:22])[0]
            if op != 2 or frame[28:32] != tip:
                continue
            mac = ":".join("%02x" % b for b in frame[22:28])
            macs[mac] = macs.get(mac, 0) + 1
            seen.add(mac)
    for mac in seen:
        rounds[mac] = rounds.get(mac, 0) + 1
    if len(seen) > 1:
        both += 1
print(json.dumps({"requests": requests, "macs": macs, "rounds": rounds, "both": both}), flush=True)
