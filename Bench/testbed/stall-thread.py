#!/usr/bin/env python3
"""Stops one thread of a process, and only that one, for a while (testbed fault injection):
the thread of PID named NAME (its comm) is seized and interrupted with ptrace, held for
SECONDS, then let go. Unlike SIGSTOP, which stops every thread of the process, the rest of
the process runs on: a stuck data-plane worker in a daemon that still sends heartbeats.

    stall-thread.py PID NAME SECONDS
Prints {"tid": TID, "stalled_s": S} when it lets go.
"""
import ctypes, json, os, sys, time

pid, name, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
WALL = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long

tids = [t for t in os.listdir(f"/proc/{pid}/task")
        if open(f"/proc/{pid}/task/{t}/comm").read().strip() == name]
if not tids:
    sys.exit(f"no thread named {name} in {pid}")
tid = int(tids[0])
if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
    sys.exit(f"PTRACE_SEIZE {tid}: {os.strerror(ctypes.get_errno())}")
if libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
    sys.exit(f"PTRACE_INTERRUPT {tid}: {os.strerror(ctypes.get_errno())}")
os.waitpid(tid, WALL)
start = time.monotonic()
time.sleep(seconds)
libc.ptrace(PTRACE_DETACH, tid, None, None)
print(json.dumps({"tid": tid, "stalled_s": round(time.monotonic() - start, 3)}), flush=True)
