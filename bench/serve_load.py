"""Benchmark: `vidcore serve` under N concurrent clients, against the job store's own insert path, same run.

A real server (a child ``vidcore serve`` on loopback, the embedded latte-shapes demo on the CPU, one
worker) takes ``--clients`` clients, each creating ``--jobs`` tiny jobs (1 step, 4 frames) over
HTTP, polling each until it is done, then downloading it. Reported: jobs per second end to end
(create to content), p50/p95 latency of create, retrieve and content calls, and the server's peak
resident memory (VmHWM).

Baseline, measured in the same run: the store alone. The same number of `JobStore.add` calls
from the same number of threads, on a fresh store of the same kind, with no HTTP, validation or
worker. What the create call costs beyond it is the API's own overhead (parsing, the request
check that `vidcore generate` also does, JSON).

    python bench/serve_load.py [--clients 8] [--jobs 5] [--store postgresql://...] [--json out.json]

With ``--store postgresql://...`` both the server and the baseline use that database (give an
empty one: the benchmark's jobs stay in it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:  # the client the openai SDK depends on: httpx2 in new releases, httpx in older ones
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from vidcore.serve.files import new_id
from vidcore.serve.store import Job, JobStore

KEY = "bench-key-0123456789"
JOB = {"prompt": "a red ball moving left", "steps": 1, "frames": 4, "seed": 1}


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * pick(0.95)}


def start_server(out: Path, store: str | None) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, VIDCORE_API_KEY=KEY, VIDCORE_LOAD_PLUGINS="latte", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "vidcore", "serve", "--port", "0", "--out", str(out), "--backend", "latte-shapes",
           "--max-queue", "100000", *(["--store", store] if store else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = None
    deadline = time.time() + 180
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        if m := re.search(r"serving on (http://\S+?) ", line):
            url = m.group(1)
    if url is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {proc.stdout.read()[-2000:]}")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep its pipe drained
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server never became ready")


def peak_rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def run_clients(url: str, clients: int, jobs: int) -> dict:
    times: dict[str, list[float]] = {"create": [], "retrieve": [], "content": []}
    errors: list[str] = []
    lock = threading.Lock()

    def timed(kind: str, fn):
        t0 = time.perf_counter()
        r = fn()
        with lock:
            times[kind].append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{kind}: {r.status_code} {r.text[:200]}")
        return r

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            try:
                ids = [timed("create", lambda: http.post("/v1/videos", json=JOB)).json()["id"] for _ in range(jobs)]
                for vid in ids:
                    while (status := timed("retrieve", lambda v=vid: http.get(f"/v1/videos/{v}")).json()["status"]) \
                            in ("queued", "in_progress"):
                        time.sleep(0.05)
                    if status != "completed":
                        raise RuntimeError(f"job {vid} {status}")
                    timed("content", lambda v=vid: http.get(f"/v1/videos/{v}/content"))
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                with lock:
                    errors.append(str(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "jobs_per_s": clients * jobs / wall if not errors else None,
            **{kind: quantiles(v) for kind, v in times.items()}, "errors": errors[:5]}


def run_baseline(store_url: str | None, folder: Path, clients: int, jobs: int) -> dict:
    """The store's insert path alone: the same adds from the same number of threads, no HTTP."""
    store: JobStore
    if store_url:
        from vidcore.serve.postgres import PostgresStore

        store = PostgresStore(store_url)
    else:
        from vidcore.serve.sqlite import SQLiteStore

        store = SQLiteStore(folder / "baseline.sqlite3")
    times: list[float] = []
    lock = threading.Lock()

    def adder() -> None:
        for _ in range(jobs):
            job = Job(id=new_id(), model="latte-shapes", prompt=JOB["prompt"], request={"prompt": JOB["prompt"]},
                      size="64x64", seconds="0.5", created_at=int(time.time()))
            t0 = time.perf_counter()
            store.add(job, max_queued=10**9)
            with lock:
                times.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=adder) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    store.close()
    return {"wall_s": wall, "adds_per_s": clients * jobs / wall, "add": quantiles(times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--jobs", type=int, default=5, help="jobs per client")
    p.add_argument("--store", help="a postgresql:// URL for the server and the baseline (default: SQLite files)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vidcore-serve-load-") as tmp:
        base = run_baseline(args.store, Path(tmp), args.clients, args.jobs)
        proc, url = start_server(Path(tmp) / "out", args.store)
        try:
            served = run_clients(url, args.clients, args.jobs)
            served["server_peak_rss_mib"] = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    store = "postgresql" if args.store else "sqlite"
    print(f"vidcore serve, {args.clients} clients x {args.jobs} jobs (latte-shapes, 1 step, 4 frames, CPU), "
          f"store {store}")
    print(f"  end to end        {served['jobs_per_s'] or float('nan'):8.2f} jobs/s   ({served['wall_s']:.1f} s)")
    for kind in ("create", "retrieve", "content"):
        q = served[kind]
        if q["n"]:
            print(f"  {kind:<17} p50 {q['p50_ms']:7.2f} ms   p95 {q['p95_ms']:7.2f} ms   ({q['n']} calls)")
    q = base["add"]
    print(f"  baseline store.add p50 {q['p50_ms']:7.2f} ms   p95 {q['p95_ms']:7.2f} ms   "
          f"({base['adds_per_s']:.0f} adds/s from {args.clients} threads)")
    if served["create"]["n"]:
        print(f"  create / store.add  {served['create']['p50_ms'] / q['p50_ms']:6.1f}x at p50")
    print(f"  server peak RSS   {served['server_peak_rss_mib'] or float('nan'):8.0f} MiB")
    for e in served["errors"]:
        print(f"  error: {e}")
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "jobs": args.jobs, "store": store,
                                         "served": served, "baseline": base}, indent=2))
    return 1 if served["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
