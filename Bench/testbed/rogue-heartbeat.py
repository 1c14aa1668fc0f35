#!/usr/bin/env python3
"""Heartbeats an LB must refuse, sent from a rogue host on the segment (testbed only).

    rogue-heartbeat.py TARGET PORT KEYFILE
    rogue-heartbeat.py --replay PCAP TARGET PORT SOURCE
The second form replays the UDP payload of the first packet in PCAP (a real heartbeat
captured with tcpdump -w) to TARGET:PORT with SOURCE as its source address (a raw socket):
a copy of the peer's own signed bytes, which the LB must refuse as replayed (the same
epoch, an old sequence) or, once the peer restarted, as old_epoch.

Sends one datagram of each kind to TARGET:PORT and prints what it sent, one kind a line:
  truncated     40 bytes
  garbage       80 bytes, wrong magic
  bad_mac       a well-formed heartbeat signed with another key
  source_mismatch  signed with the pair's key, but from this host (not the peer)
Each is what the LB counts it as (cluster.interconnects[].rejected).
"""
import hashlib, hmac, os, socket, struct, sys, time

if sys.argv[1] == "--replay":
    pcap, target, port, source = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    data = open(pcap, "rb").read()
    linktype = struct.unpack("<I", data[20:24])[0]
    assert linktype == 1, "an Ethernet capture"
    frame = data[24 + 16:]
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    payload = ip[ihl + 8:ihl + 8 + struct.unpack("!H", ip[ihl + 4:ihl + 6])[0] - 8]
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(source), socket.inet_aton(target))
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    r.sendto(header + udp, (target, 0))
    print("replayed %d bytes, sequence %d" % (len(payload), struct.unpack(">Q", payload[16:24])[0]))
    sys.exit(0)

target, port, keyfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = open(keyfile, "rb").read().strip()  # as the daemon reads a key file (SharedKey: trimmed)

def heartbeat(k, role=2, flags=0x05, epoch=None, sequence=1):
    epoch = epoch if epoch is not None else int(time.time() * 1000)
    body = b"FLHB" + bytes([1, role, flags, 0]) + struct.pack(">QQQ", epoch, sequence, 1) + bytes(16)
    return body + hmac.new(k, body, hashlib.sha256).digest()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = {
    "truncated": heartbeat(key)[:40],
    "garbage": b"XXXX" + heartbeat(key)[4:],
    "bad_mac": heartbeat(os.urandom(32)),
    "source_mismatch": heartbeat(key),
}
for kind, data in sent.items():
    s.sendto(data, (target, port))
    print(kind)
