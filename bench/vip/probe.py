#!/usr/bin/env python3
"""A client of a virtual IP: GET / over a new TCP connection every INTERVAL, and report the
longest time without an answer (the client-observed gap) and which node answered when.

Used by the VIP integration tests (tests/integration/vip.rs) and the benchmark
(bench/vip/run.sh), inside the client's network namespace. Runs until SECONDS pass or the stop
file exists; prints one JSON object. Creates STOPFILE.ready at its first answer, and writes the node that
answers to STOPFILE.served each time it changes (so a test can wait for the client to follow a
move). It only connects to the address it is given.

usage: probe.py IP PORT SECONDS STOPFILE [INTERVAL_S] [TIMEOUT_S]
"""
import json
import os
import socket
import sys
import time


def once(ip, port, timeout):
    """(node that answered, None) or (None, "connect") when no connection could be made, or
    (None, "cut") when a connection was made but cut before the answer (a VIP that moves
    while a request is in flight: the new holder resets a connection it never saw)."""
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
    except OSError:
        s.close()
        return None, "connect"
    try:
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            return None, "cut"
        return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip(), None
    except OSError:
        return None, "cut"
    finally:
        s.close()


def main():
    ip, port, seconds, stop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.005
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 0.02
    start = time.monotonic()
    last_ok = None
    first_ok = None
    max_gap = 0.0
    gap_at = None
    attempts = ok = 0
    failed = 0  # after the first answer (the first attempts may wait for ARP)
    failed_kind = {"connect": 0, "cut": 0}
    served = []  # [node, first answer (s since start)]
    while time.monotonic() - start < seconds and not os.path.exists(stop):
        t = time.monotonic()
        attempts += 1
        who, why = once(ip, port, timeout)
        now = time.monotonic()
        if who is not None:
            ok += 1
            if first_ok is None:
                first_ok = now
                open(stop + ".ready", "w").close()
            if last_ok is not None and now - last_ok > max_gap:
                max_gap = now - last_ok
                gap_at = last_ok - start
            last_ok = now
            if not served or served[-1][0] != who:
                served.append([who, round(now - start, 4)])
                with open(stop + ".served.tmp", "w") as f:
                    f.write(who)
                os.replace(stop + ".served.tmp", stop + ".served")
        elif first_ok is not None:
            failed += 1
            failed_kind[why] += 1
        rest = interval - (time.monotonic() - t)
        if rest > 0:
            time.sleep(rest)
    # A gap still open at the end counts too.
    end = time.monotonic()
    if last_ok is not None and end - last_ok > max_gap:
        max_gap = end - last_ok
        gap_at = last_ok - start
    print(json.dumps({
        "attempts": attempts,
        "ok": ok,
        "failed": failed,
        "failed_connect": failed_kind["connect"],
        "failed_cut": failed_kind["cut"],
        "max_gap_ms": round(max_gap * 1000, 1) if last_ok is not None else None,
        "gap_at_s": round(gap_at, 4) if gap_at is not None else None,
        "served": served,
    }))


if __name__ == "__main__":
    main()
