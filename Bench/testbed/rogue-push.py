#!/usr/bin/env python3
"""Configuration pushes a standby must refuse (testbed only), sent over TCP from SOURCE
(an address of the namespace it runs in, e.g. the active's own interconnect address, so
that only the push itself is wrong) to TARGET:PORT. Prints the standby's answer line, or
"closed" when it closed without one.

    rogue-push.py truncated TARGET PORT SOURCE KEYFILE
        a well-formed header and half of its document, then the connection closes: what
        the standby sees when the active is killed in the middle of a push
    rogue-push.py bad_mac TARGET PORT SOURCE
        a whole push signed with another key
    rogue-push.py replay TARGET PORT SOURCE PCAP
        the bytes of a real push captured with `tcpdump -w` (the first TCP stream to PORT
        in the file), sent again
The push's layout is ConfigSync's (Sources/FulcrumControl/ConfigSync.swift).
"""
import hashlib, hmac, os, socket, struct, sys, time

mode, target, port, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def push(key, version=99, sequence=1, document=b'{"groups": []}'):
    header = b"FLCS" + bytes([1, 0, 0, 0]) + struct.pack(">QQQI", int(time.time() * 1000), sequence, version, len(document))
    return header + document + hmac.new(key, header + document, hashlib.sha256).digest()


def captured(path):
    """The payload bytes of the first TCP connection to `port` in a pcap, in sequence order."""
    data = open(path, "rb").read()
    assert struct.unpack("<I", data[20:24])[0] == 1, "an Ethernet capture"
    offset, stream, first = 24, {}, None
    while offset + 16 <= len(data):
        caplen = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 6:
            continue
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        if dport != port:
            continue
        if first is None:
            first = sport
        if sport != first:
            continue
        payload = tcp[(tcp[12] >> 4) * 4:struct.unpack(">H", ip[2:4])[0] - ihl]
        if payload:
            stream[seq] = payload
    return b"".join(stream[s] for s in sorted(stream))


if mode == "truncated":
    whole = push(open(sys.argv[5], "rb").read())
    body = whole[:36 + (len(whole) - 36 - 32) // 2]
elif mode == "bad_mac":
    body = push(os.urandom(32))
elif mode == "replay":
    body = captured(sys.argv[5])
    assert body[:4] == b"FLCS", "no push in the capture"
else:
    sys.exit("mode: truncated | bad_mac | replay")

s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_STREAM)
s.bind((source, 0))
s.settimeout(5)
s.connect((target, port))
s.sendall(body)
s.shutdown(socket.SHUT_WR)  # the sender is gone: nothing more comes
answer = b""
try:
    while not answer.endswith(b"\n"):
        chunk = s.recv(200)
        if not chunk:
            break
        answer += chunk
except socket.timeout:
    pass
print(answer.decode().strip() or "closed")
