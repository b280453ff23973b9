#!/usr/bin/env python3
"""Memory of a running mmgate, read from /proc (used by bench/load.sh).

  memory.py stream URL PID          peak RSS growth while streaming URL
  memory.py idle HOST PORT N PID    RSS cost of N idle keep-alive connections
"""
import socket
import sys
import threading
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def stream(url, pid):
    base = rss_kib(pid)
    peak = base
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 0
    with urllib.request.urlopen(url) as response:
        while True:
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            size += len(chunk)
            time.sleep(0.0005)  # a slowish reader: the proxy must not buffer ahead
    done.set()
    sampler.join()
    print(f"streamed {size / 2**20:.0f} MiB: peak RSS growth {(peak - base) / 1024:.2f} MiB ({peak - base} KiB)")


def idle(host, port, n, pid):
    """n client connections that each made one request and stay open.

    First with the requests made one at a time (what idle connections
    cost), then with the same number sent at once: that burst also opens
    up to n upstream connections, and the allocator keeps what they used.
    """
    request = f"GET /reports/production HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def answered(s):
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)

    for burst in (False, True):
        base = rss_kib(pid)
        conns = []
        for _ in range(n):
            s = socket.create_connection((host, port))
            s.sendall(request)
            if not burst:
                answered(s)
            conns.append(s)
        if burst:
            for s in conns:
                answered(s)
        time.sleep(0.5)
        after = rss_kib(pid)
        how = "requests sent at once" if burst else "requests one at a time"
        print(f"{n} idle keep-alive connections ({how}): RSS +{(after - base) / 1024:.2f} MiB ({after - base} KiB)")
        for s in conns:
            s.close()
        time.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1] == "stream":
        stream(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "idle":
        idle(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
