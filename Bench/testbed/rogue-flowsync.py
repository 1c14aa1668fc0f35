#!/usr/bin/env python3
"""Flow-sync datagrams a standby must refuse, sent from a rogue host (testbed only).

    rogue-flowsync.py TARGET PORT KEYFILE

Sends one datagram of each kind to TARGET:PORT (the standby's flow-sync port on an
interconnect) and prints what it sent, one kind a line:
  truncated        20 bytes
  garbage          100 bytes, wrong magic
  bad_mac          a well-formed data datagram with a record, signed with another key
  source_mismatch  signed with the pair's key, but from this host (not the peer)
Each is what the LB counts it as (cluster.flow_sync.rejected); none may change a flow.
The record each carries names a flow of the testbed's MAT VIP to its first node, so a
standby that applied one would hold it (records_held would move).
"""
import hashlib, hmac, os, socket, struct, sys, time

target, port, keyfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = open(keyfile, "rb").read().strip()  # as the daemon reads a key file (SharedKey: trimmed)

def record():
    # flags (IPv4, state established=2), proto 6, ports, client, VIP, node, node port, lifetime.
    return struct.pack("!BBHH4s4s4sHH", 2, 6, 40001, 80, socket.inet_aton("198.18.0.2"),
                       socket.inet_aton("198.18.1.10"), socket.inet_aton("198.18.0.11"), 0, 900)

def datagram(k, epoch=None, sequence=1):
    epoch = epoch or int(time.time() * 1000) + 60_000  # a later stream than any real one
    body = record()
    header = b"FLSY" + struct.pack("!BBBBQQIH", 1, 1, 0, 0, epoch, sequence, 1, 1)
    signed = header + body
    return signed + hmac.new(k, signed, hashlib.sha256).digest()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for kind, payload in [("truncated", b"FLSY" + bytes(16)),
                      ("garbage", b"XXXX" + os.urandom(96)),
                      ("bad_mac", datagram(b"not the pair's key, not at all")),
                      ("source_mismatch", datagram(key))]:
    s.sendto(payload, (target, port))
    print(kind)
