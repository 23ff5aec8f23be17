"""What one key holder can still do to `sygno serve` (embedded store),
loopback only, bounded in requests and time. Run by scripts/bench-hostile.

  slow   200 connections with the write key declare 1 MB write_batch bodies
         and send one byte; a well-behaved client then times N write_raw and
         N expose (another write key, the read key): p50 / p99 / max.
  sources N sources (default 10,000, the default bound), an event each, 20
         fields: RSS before and after (per source), then writes just after
         three minute boundaries: how long until each shows in its source's
         24h_stats (the minute's roll renders every source then).
  series 1,000 events of 1,000 fields (one a minute), then 32 concurrent
         series of 1,000 buckets x 1,000 fields (1,000,000 statistics, the
         largest allowed); a client that gets 503 busy retries after its
         Retry-After. Peak RSS of the server (VmHWM) and wall time.

usage: bench_hostile.py SYGNO_BINARY [slow|series|sources|all] [SOURCES]
"""

import concurrent.futures
import datetime
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

ROUNDS = 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data_dir, extra=()):
        self.keys = {k: secrets.token_hex(16) for k in ("write", "write2", "read")}
        self.port = free_port()
        env = dict(os.environ)
        env["SYGNO_API_KEYS"] = ",".join(
            f"{role}={key}" for role, key in
            (("write", self.keys["write"]), ("write", self.keys["write2"]), ("read", self.keys["read"])))
        env["RUST_LOG"] = "warn"
        self.proc = subprocess.Popen(
            [binary, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", data_dir, *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("sygno did not start")

    def request(self, method, path, body=None, key=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload, response.getheader("retry-after")

    def memory_mb(self, field):
        """VmHWM (peak) or VmRSS (now) of the server, in MB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentiles(samples):
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return f"p50 {pick(0.5) * 1e3:7.2f} ms   p99 {pick(0.99) * 1e3:7.2f} ms   max {samples[-1] * 1e3:7.2f} ms"


def slow(server):
    server.request("POST", "/source/write_raw", {"data": {"first": 1}}, server.keys["write2"])
    deadline = time.time() + 60
    while server.request("POST", "/source/expose", {"type": "latest"}, server.keys["read"])[0] != 200:
        if time.time() > deadline:
            raise SystemExit("the first event was not aggregated within 60 s")
        time.sleep(0.1)
    held = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall((
            "POST /source/write_batch HTTP/1.1\r\nHost: sygno\r\n"
            f"x-api-key: {server.keys['write']}\r\ncontent-type: application/json\r\n"
            "content-length: 1000000\r\n\r\n{").encode())
        held.append(s)
    time.sleep(0.5)
    times = {"write_raw": [], "expose": []}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    for i in range(ROUNDS):
        for route, key, body in (
                ("write_raw", server.keys["write2"], {"data": {"i": i}}),
                ("expose", server.keys["read"], {"type": "latest"})):
            t0 = time.perf_counter()
            conn.request("POST", f"/source/{route}", body=json.dumps(body),
                         headers={"x-api-key": key, "content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            times[route].append(time.perf_counter() - t0)
            assert response.status == 200, (route, response.status)
    print(f"slow: 200 slow-body clients of the write key held open; {ROUNDS} requests each, one keep-alive connection")
    for route, samples in times.items():
        print(f"  {route:9} {percentiles(samples)}")
    for s in held:
        s.close()


def series(server):
    start = (int(time.time()) // 60 - 1_000) * 60
    stamp = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    batch = []
    for i in range(1_000):
        batch.append({"name": "wide", "event_time": stamp(start + 60 * i),
                      "data": {f"f{j}": i + j for j in range(1_000)}})
        if len(batch) == 40:
            status, payload, _ = server.request("POST", "/source/write_batch", {"events": batch}, server.keys["write"])
            assert status == 200, payload[:300]
            batch = []
    if batch:
        server.request("POST", "/source/write_batch", {"events": batch}, server.keys["write"])
    deadline = time.time() + 300
    while time.time() < deadline:
        status, payload, _ = server.request("POST", "/source/expose", {"type": "24h_stats", "name": "wide"},
                                            server.keys["read"])
        if status == 200 and json.loads(payload)["data"]["count"] == 1_000:
            break
        time.sleep(0.5)
    else:
        raise SystemExit("the events were not aggregated within 300 s")
    query = {"name": "wide", "interval": "1m", "from": stamp(start), "to": stamp(start + 60 * 1_000)}
    status, payload, _ = server.request("POST", "/source/series", query, server.keys["read"])
    assert status == 200, payload[:300]
    size = len(payload)
    cells = sum(len(b["fields"]) for b in json.loads(payload)["data"]["buckets"])
    rss_before = server.memory_mb('VmRSS')

    def one(_):
        busy = 0
        while True:
            status, payload, retry = server.request("POST", "/source/series", query, server.keys["read"], timeout=600)
            if status == 503:
                busy += 1
                time.sleep(float(retry or 1))
                continue
            assert status == 200 and len(payload) == size, (status, payload[:200])
            return busy

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        busy = sum(pool.map(one, range(32)))
    wall = time.perf_counter() - t0
    print(f"series: {cells:,} statistics, {size / 1e6:.1f} MB an answer; RSS before {rss_before:.0f} MB")
    print(f"  32 concurrent: all answered in {wall:.1f} s ({32 / wall:.2f} answers/s), "
          f"{busy} busy answers retried; peak RSS (VmHWM) {server.memory_mb('VmHWM'):.0f} MB, after {server.memory_mb('VmRSS'):.0f} MB")


def sources(server, count):
    rss_empty = server.memory_mb("VmRSS")
    for first in range(0, count, 1_000):
        events = [{"name": f"gh-{n:06}", "data": {f"f{j}": n + j for j in range(20)}}
                  for n in range(first, min(count, first + 1_000))]
        status, payload, _ = server.request("POST", "/source/write_batch", {"events": events}, server.keys["write"])
        assert status == 200, payload[:300]
    status, payload, _ = server.request("POST", "/source/write_raw", {"name": "one-too-many", "data": {}},
                                        server.keys["write"])
    print(f"sources: {count:,} written; one more: {status} {json.loads(payload)['data']}")
    deadline = time.time() + 600
    last = f"gh-{count - 1:06}"
    while time.time() < deadline:
        status, payload, _ = server.request("POST", "/source/expose", {"type": "24h_stats", "name": last},
                                            server.keys["read"])
        if status == 200 and json.loads(payload)["data"]["count"] == 1:
            break
        time.sleep(0.5)
    time.sleep(65)  # a minute's roll over every source, at least
    rss = server.memory_mb("VmRSS")
    print(f"  RSS empty {rss_empty:.0f} MB, with {count:,} sources {rss:.0f} MB: "
          f"{(rss - rss_empty) * 1024 / count:.1f} KB a source; peak {server.memory_mb('VmHWM'):.0f} MB")
    for round_ in range(3):
        time.sleep(60 - time.time() % 60 + 0.2)  # just after a minute boundary
        name = f"gh-{(round_ * 997) % count:06}"
        status, payload, _ = server.request("POST", "/source/expose", {"type": "24h_stats", "name": name},
                                            server.keys["read"])
        before = json.loads(payload)["data"]["count"]
        t0 = time.perf_counter()
        offset = time.time() % 60
        server.request("POST", "/source/write_raw", {"name": name, "data": {"f0": 1}}, server.keys["write"])
        while True:
            status, payload, _ = server.request("POST", "/source/expose", {"type": "24h_stats", "name": name},
                                                server.keys["read"])
            if json.loads(payload)["data"]["count"] > before:
                break
            time.sleep(0.01)
        print(f"  a write {offset:.1f} s after a minute boundary: "
              f"in its 24h_stats after {(time.perf_counter() - t0) * 1e3:.0f} ms")


def main():
    binary, what = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "all")
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    with tempfile.TemporaryDirectory() as data:
        extra = ["--max-sources", str(count)] if what == "sources" and count > 10_000 else []
        server = Server(binary, data, extra)
        try:
            if what in ("slow", "all"):
                slow(server)
            if what in ("series", "all"):
                series(server)
            if what in ("sources", "all"):
                sources(server, count)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
