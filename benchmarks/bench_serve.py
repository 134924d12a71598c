"""Load test of `hybridpose serve`: requests/s and p50/p99 latency for one photo per request with 1, 4 and
16 concurrent clients, the server's memory after 100 and after 1,000 requests, the failed count, and every
bad upload (garbage, huge, zero bytes, a video with no frames, a wrong content type, a path-traversal name)
answered 4xx with a reason and nothing left in the server's upload folder.

    .venv/bin/python benchmarks/bench_serve.py --model RUN [--data DIR] [--requests 200] [--json PATH]
    .venv/bin/python benchmarks/bench_serve.py --smoke [--model RUN]   # tiny: does it run?

The server is the real command (`python -m hybridpose_cli.main serve RUN --port 0`) in its own process on
127.0.0.1 only, with a fresh pose cache; the clients are threads of this process, each with its own
keep-alive connection. Every request carries a different file (a JPEG comment with the request number is
added), so no request is answered from the pose cache: each one is a new photo, as a webcam frame is.
Bounded: a fixed number of requests per level (--requests), the memory phase --memory-requests in all, and
every request has a client timeout. Memory is the server process's resident set (VmRSS, /proc).
--smoke: fits a tiny run on the spot unless --model, 12 requests per level, memory at 10 and 40.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

LEVELS = (1, 4, 16)


# ---------------------------------------------------------------------------- the server


class ServerProcess:
    """`hybridpose serve RUN --port 0` in a child process; its URL read from the line that says it."""

    def __init__(self, run: Path, tmp: Path, queue: int):
        env = {**os.environ, "TMPDIR": str(tmp), "HYBRIDPOSE_CACHE": str(tmp / "pose-cache"), "COLUMNS": "300"}
        cmd = [sys.executable, "-m", "hybridpose_cli.main", "serve", str(run), "--host", "127.0.0.1", "--port", "0",
               "--queue", str(queue), "--max-upload-mb", "8"]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        said = ""  # lines before the URL (the run's ONNX graph built on first use says so)
        for _ in range(20):
            line = self.proc.stdout.readline()
            said += line
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if found or not line:
                break
        if not found:
            self.proc.kill()
            sys.exit(f"the server did not start: {said}{self.proc.stdout.read()}")
        self.url, self.tmp = found.group(1), tmp
        self.start_s = time.perf_counter() - t0
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # never let its pipe fill

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024

    def uploads_left(self) -> list[str]:
        return [str(p) for d in self.tmp.glob("hybridpose-serve-*") for p in d.iterdir()]

    def stop(self) -> int:
        self.proc.send_signal(2)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# ---------------------------------------------------------------------------- the clients


def multipart(files: list[tuple[str, bytes]], part_type: str = "image/jpeg") -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{n}"\r\n'
                    f"Content-Type: {part_type}\r\n\r\n".encode() + d + b"\r\n" for n, d in files)
    return body + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


class Client:
    """One keep-alive connection (reopened after an error or a server close)."""

    def __init__(self, url: str, timeout: float):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.conn: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            try:
                self.conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered before the whole body went out (413): read the answer
            res = self.conn.getresponse()
            raw = res.read()
            if res.getheader("connection", "").lower() == "close":
                self.close()
            return res.status, json.loads(raw) if raw else {}
        except Exception as e:  # a failed request is counted, never hidden
            self.close()
            return 0, {"detail": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def unique(photo: bytes, n: int) -> bytes:
    """The photo with a JPEG comment holding ``n``: another file (content hash) with the same pixels."""
    if not photo.startswith(b"\xff\xd8"):
        return photo
    text = f"hybridpose bench request {n}".encode()
    return photo[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + photo[2:]


def load(url: str, photos: list[tuple[str, bytes]], clients: int, requests: int, counter: list[int],
         timeout: float) -> dict:
    """``requests`` one-photo requests spread over ``clients`` threads; latencies, failures, requests/s."""
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    todo = [requests]

    def worker() -> None:
        c = Client(url, timeout)
        while True:
            with lock:
                if todo[0] <= 0:
                    break
                todo[0] -= 1
                counter[0] += 1
                n = counter[0]
            name, data = photos[n % len(photos)]
            body, ctype = multipart([(name, unique(data, n))])
            t0 = time.perf_counter()
            status, answer = c.send("POST", "/predict", body, ctype)
            dt = time.perf_counter() - t0
            ok = status == 200 and answer.get("predictions") and answer["predictions"][0].get("status")
            with lock:
                latencies.append(dt)
                if not ok:
                    failures.append(f"{status}: {str(answer.get('detail'))[:100]}")
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = (lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] * 1000) if lat else (lambda q: float("nan"))
    return {"clients": clients, "requests": len(lat), "failed": len(failures), "failures": failures[:5],
            "wall_s": round(wall, 2), "requests_per_s": round(len(lat) / wall, 2) if wall else None,
            "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1), "max_ms": round(pct(1.0), 1)}


# ---------------------------------------------------------------------------- bad uploads


def empty_video(path: Path) -> bytes:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()  # the header is written although no frame follows
        for packet in s.encode(None):
            c.mux(packet)
    return path.read_bytes()


def bad_uploads(server: ServerProcess, photo: bytes, tmp: Path) -> list[dict]:
    c = Client(server.url, 120)
    garbage = b"not a photo\n" * 100
    cases = {
        "garbage": lambda: c.send("POST", "/predict", *multipart([("x.jpg", garbage)])),
        "huge (9 MB, limit 8)": lambda: c.send("POST", "/predict", *multipart([("big.jpg", photo + os.urandom(9_000_000))])),
        "zero bytes": lambda: c.send("POST", "/predict", *multipart([("empty.jpg", b"")])),
        "video with no frames": lambda: c.send("POST", "/predict", *multipart([("clip.mp4", empty_video(tmp / "e.mp4"))],
                                                                           "video/mp4")),
        "wrong content type (JSON body)": lambda: c.send("POST", "/predict", b'{"photo": 1}', "application/json"),
        "wrong content type (text as image/png)": lambda: c.send("POST", "/predict",
                                                                  *multipart([("x.png", garbage)], "image/png")),
        "path-traversal name": lambda: c.send("POST", "/predict", *multipart([("../../etc/passwd.jpg", photo)])),
    }
    rows = []
    for what, call in cases.items():
        status, answer = call()
        left = server.uploads_left()
        rows.append({"case": what, "status": status, "reason": str(answer.get("detail")), "left_behind": len(left)})
    c.close()
    return rows


# ---------------------------------------------------------------------------- main


def fit_smoke_run(tmp: Path, data: Path) -> Path:
    subset = _common.subset_folder(data, 3, tmp / "fit-data")
    cmd = [sys.executable, "-m", "hybridpose_cli.main", "fit", str(subset), "--out", str(tmp / "run"), "--folds", "2",
           "--preset", "tiny", "--cache", str(tmp / "fit-cache")]
    t0 = time.perf_counter()
    if subprocess.run(cmd, capture_output=True, text=True).returncode:
        sys.exit("fitting the smoke run failed")
    print(f"smoke: fitted a tiny run in {time.perf_counter() - t0:.0f} s (not measured)\n")
    return tmp / "run"


def pick_photos(data: Path, n: int) -> list[tuple[str, bytes]]:
    from hybridpose.data.datasets import list_images

    jpegs = [p for p in list_images(data) if p.read_bytes()[:2] == b"\xff\xd8"]
    return [(p.name, p.read_bytes()) for p in _common.spread(jpegs, n)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a run folder made by `hybridpose fit` (required, except with --smoke)")
    ap.add_argument("--data", help="photos to send (default ../shared/data/yoga8, else data/sample)")
    ap.add_argument("--photos", type=int, default=64, help="distinct photos cycled over (default 64)")
    ap.add_argument("--requests", type=int, default=200, help="requests per concurrency level (default 200)")
    ap.add_argument("--memory-requests", type=int, nargs=2, default=[100, 1000], metavar=("FIRST", "THEN"),
                    help="memory read after this many requests, then after this many in all (default 100 1000)")
    ap.add_argument("--timeout", type=float, default=300, help="client timeout per request, seconds")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    _common.add_smoke_arg(ap, "12 requests per level, memory at 10 and 40")
    args = ap.parse_args(argv)
    _common.apply_smoke(args, requests=12, memory_requests=[10, 40], photos=8)
    if not args.model and not args.smoke:
        ap.error("--model RUN is required (or --smoke, which fits a tiny run on the spot)")
    keep = _common.setup_env()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=keep.name))
    data = _common.resolve_data(args.data, args.smoke)
    run = Path(args.model) if args.model else fit_smoke_run(tmp, data)
    photos = pick_photos(data, args.photos)
    print(_common.busy_warning("before"))
    server = ServerProcess(run, tmp, queue=2 * max(LEVELS))
    print(f"server {server.url} started in {server.start_s:.1f} s (the run loads once); {len(photos)} photos from "
          f"{data}, each request a new file\n")
    counter = [0]
    load(server.url, photos, 1, 3, counter, args.timeout)  # warm-up: first calls build lazy state
    levels = [load(server.url, photos, c, args.requests, counter, args.timeout) for c in LEVELS]
    _common.print_table("one photo per request (127.0.0.1; under load: other jobs share the CPUs)",
                        ["clients", "requests", "failed", "requests/s", "p50 ms", "p99 ms", "max ms"],
                        [[r["clients"], r["requests"], r["failed"], r["requests_per_s"], r["p50_ms"], r["p99_ms"],
                          r["max_ms"]] for r in levels])
    first, then = args.memory_requests
    served0 = counter[0]
    mem_load = [load(server.url, photos, 4, first, counter, args.timeout)]
    rss_first = server.rss_mb()
    mem_load.append(load(server.url, photos, 4, then - first, counter, args.timeout))
    rss_then = server.rss_mb()
    memory = {"after_first_mb": round(rss_first, 1), "after_then_mb": round(rss_then, 1),
              "first": first, "then": then, "growth_mb": round(rss_then - rss_first, 1),
              "failed": sum(r["failed"] for r in mem_load), "requests": counter[0] - served0,
              "total_requests_served": counter[0]}
    _common.print_table(f"server memory (VmRSS), 4 clients; counted from request {served0 + 1}",
                        ["after requests", "RSS MB"], [[first, memory["after_first_mb"]], [then, memory["after_then_mb"]]])
    bad = bad_uploads(server, photos[0][1], tmp)
    _common.print_table("bad uploads", ["case", "HTTP", "left behind", "reason"],
                        [[b["case"], b["status"], b["left_behind"], b["reason"][:90]] for b in bad])
    code = server.stop()
    left = list(tmp.glob("hybridpose-serve-*"))
    failed = sum(r["failed"] for r in levels) + memory["failed"]
    print(f"failed requests: {failed} of {counter[0]}; server exit code {code}; upload folder removed at exit: "
          f"{not left}")
    print(_common.busy_warning("after"))
    _common.smoke_check(failed == 0, f"{failed} requests failed: {[r['failures'] for r in levels]}")
    _common.smoke_check(all(400 <= b["status"] < 500 and b["reason"] and not b["left_behind"] for b in bad),
                        f"a bad upload was not refused cleanly: {bad}")
    _common.smoke_check(not left and code in (0, 130), "the server left its upload folder or exited badly")
    payload = {"model": str(run), "data": str(data), "levels": levels, "memory": memory, "bad_uploads": bad,
               "failed": failed, "server_start_s": round(server.start_s, 2), "smoke": args.smoke,
               "machine": _common.machine_info()}
    return _common.finish(args, payload)


if __name__ == "__main__":
    main()
