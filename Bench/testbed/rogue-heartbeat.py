#!/usr/bin/env python3
"""Heartbeats an LB must refuse, sent from a rogue host on the segment (testbed only).

    rogue-heartbeat.py TARGET PORT KEYFILE
Sends one datagram of each kind to TARGET:PORT and prints what it sent, one kind a line:
  truncated     40 bytes
  garbage       80 bytes, wrong magic
  bad_mac       a well-formed heartbeat signed with another key
  source_mismatch  signed with the pair's key, but from this host (not the peer)
Each is what the LB counts it as (cluster.interconnects[].rejected).
"""
import hashlib, hmac, os, socket, struct, sys, time

target, port, keyfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = open(keyfile, "rb").read()

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
