"""GPU cost teardown and placement: one sensor tick over 10,000 leases, 50 pools, three backends' listings.

Setup: 50 pools (17 local, 17 EC2, 16 Kubernetes), 4 capacity units per pool (local nodes in the lease
store's SQLite database, EC2 instances in moto's server over HTTP, pods served by a local HTTP server in
kube-apiserver's PodList format), 10,000 leases (500 live, 9,500 released history); about one unit in
eight is idle.

- ``tick_s``: one real tick over the three backends' listings, fetched just before the clock starts
  (expire and settle leases, read them, record capacity, decide, terminate the idle units through the
  real backends - one EC2 call, one DELETE per pod, one SQL update per node - and record the teardowns).
- ``listing_s``: what each backend's listing took (moto's and the local servers' response times, not
  hybrid-dagster's).
- ``tick_with_live_listings_dry_run_s``: a dry-run tick that lists the backends itself, in parallel.
- ``placements_per_s``: 1,000 placement decisions over the 50 pools.

Prints one JSON object.

    python -m benchmarks.teardown_tick [--leases 10000] [--pools 50]
    python benchmarks/teardown_tick.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from moto.server import ThreadedMotoServer

from hybrid_dagster.gpu.backends.base import GpuBackend, Listing
from hybrid_dagster.gpu.backends.ec2 import Ec2Backend
from hybrid_dagster.gpu.backends.k8s import KubernetesBackend
from hybrid_dagster.gpu.backends.local import LocalBackend
from hybrid_dagster.gpu.leases import LeaseStore, leases_table
from hybrid_dagster.gpu.model import CapacityUnit, Demand, PoolFacts
from hybrid_dagster.gpu.placement import place
from hybrid_dagster.gpu.teardown import run_tick

UNITS_PER_POOL = 4
HOURS = 3600.0


def _pools(count: int) -> list[PoolFacts]:
    kinds = ["local", "ec2", "kubernetes"]
    pools = []
    for i in range(count):
        backend = kinds[i % 3]
        pools.append(
            PoolFacts(
                name=f"pool-{i:02d}",
                plane=f"plane-{i % 6}",
                jurisdiction=["EU", "US", "UK"][i % 3 if backend != "local" else (i // 3) % 3],
                location="on_prem" if backend == "local" else "cloud",
                accelerator=["A100", "H100", "L40S"][i % 3],
                capacity_gpus=32,
                price_per_gpu_hour=1.0 + (i % 5) * 0.5,
                driver_version="550.54",
                cuda_version="12.4",
                idle_minutes=30,
                max_lifetime_hours=72,
                team=f"team-{i % 4}",
                backend=backend,  # type: ignore[arg-type]
            )
        )
    return pools


class Replayed(GpuBackend):
    """A backend whose listing was fetched before the clock started; teardowns go to the real backend."""

    def __init__(self, real: GpuBackend, listing: Listing) -> None:
        self.real, self.listing, self.kind = real, listing, real.kind

    def key(self) -> str:
        return self.real.key()

    def list(self, pools: Sequence[str]) -> Listing:
        return self.listing

    def terminate(self, unit: CapacityUnit) -> None:
        self.real.terminate(unit)

    def terminate_many(self, units: Sequence[CapacityUnit]) -> dict[str, str | None]:
        return self.real.terminate_many(units)


class PodListServer:
    """Serves one PodList (kube-apiserver wire format) and an empty JobList; accepts deletes."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}).encode()
        jobs = json.dumps({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": []}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(jobs if "/jobs" in self.path else body)

            def do_DELETE(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(b'{"kind": "Pod", "apiVersion": "v1", "metadata": {}}')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _pod(pool: str, name: str, started: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": str(uuid.uuid4()),
            "creationTimestamp": started,
            "labels": {"hybrid-dagster/gpu-pool": pool},
        },
        "spec": {
            "containers": [{"name": "w", "image": "img", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]
        },
        "status": {"phase": "Running", "startTime": started},
    }


def run(lease_count: int, pool_count: int, workdir: Path) -> dict[str, Any]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    rng = random.Random(7)
    pools = _pools(pool_count)
    store = LeaseStore(f"sqlite:///{workdir / 'leases.db'}")
    local = LocalBackend(store)
    now = time.time() + 2 * HOURS  # every unit has been up for two hours

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
    incarnations: dict[str, list[str]] = {}
    pods: list[dict[str, Any]] = []
    started_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    for pool in pools:
        units: list[str] = []
        if pool.backend == "local":
            units = [
                local.register(pool.name, f"{pool.name}-n{i}", gpus=8, launched_at=time.time()).incarnation
                for i in range(UNITS_PER_POOL)
            ]
        elif pool.backend == "ec2":
            reply = ec2.run_instances(
                ImageId="ami-12c6146b",
                MinCount=UNITS_PER_POOL,
                MaxCount=UNITS_PER_POOL,
                InstanceType="p4d.24xlarge",
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": "hybrid-dagster/gpu-pool", "Value": pool.name},
                            {"Key": "hybrid-dagster/gpus", "Value": "8"},
                        ],
                    }
                ],
            )
            units = [i["InstanceId"] for i in reply["Instances"]]
        else:
            for i in range(UNITS_PER_POOL):
                pod = _pod(pool.name, f"{pool.name}-p{i}", started_iso)
                pods.append(pod)
                units.append(pod["metadata"]["uid"])
        incarnations[pool.name] = units
    k8s = PodListServer(pods)

    # 10,000 leases: every unit but one in eight is held by a live lease; the rest is released history
    rows = []
    all_units = [(pool.name, unit) for pool in pools for unit in incarnations[pool.name]]
    live = [pair for index, pair in enumerate(all_units) if index % 8 != 3]
    for index in range(lease_count):
        pool_name, unit = live[index % len(live)] if index < 500 else rng.choice(all_units)
        since = now - rng.uniform(1, 48) * HOURS
        is_live = index < 500
        rows.append(
            {
                "lease_id": uuid.uuid4().hex,
                "pool": pool_name,
                "gpus": 1,
                "devices": str(index % 32),
                "run_id": f"run-{index}",
                "incarnation": unit,
                "since": since,
                "heartbeat": now if is_live else since + 600,
                "released_at": None if is_live else min(since + 1800, now - 3 * HOURS),
                "release_reason": None if is_live else "run succeeded",
            }
        )
    with store.engine.begin() as conn:
        conn.execute(leases_table.insert(), rows)

    backends: dict[str, GpuBackend] = {}
    ec2_backend = Ec2Backend(region="us-east-1", endpoint_url=endpoint)
    k8s_backend = KubernetesBackend(namespace="ml", host=k8s.url)
    for pool in pools:
        backends[pool.name] = {"local": local, "ec2": ec2_backend, "kubernetes": k8s_backend}[pool.backend]
    try:
        listing_s: dict[str, float] = {}
        replayed: dict[str, GpuBackend] = {}
        for backend in (local, ec2_backend, k8s_backend):
            names = [p.name for p in pools if backends[p.name] is backend]
            started = time.perf_counter()
            listing = backend.list(names)
            listing_s[backend.kind] = round(time.perf_counter() - started, 3)
            assert listing.error is None, listing.error
            for name in names:
                replayed[name] = Replayed(backend, listing)
        dry = run_tick(pools, backends, store, dry_run=True, max_teardowns=1000, now=now)
        started = time.perf_counter()
        report = run_tick(pools, replayed, store, max_teardowns=1000, now=now)
        tick_s = time.perf_counter() - started
    finally:
        k8s.stop()
        moto.stop()

    free = store.free_gpus({p.name: p.capacity_gpus for p in pools}, now=now)
    demands = [
        Demand(
            gpus=rng.randint(1, 16),
            jurisdictions=frozenset({rng.choice(["EU", "US", "UK"])}),
            lineage="bench",
            lineage_versions=("550.54", "12.4"),
            allow_burst=rng.random() < 0.8,
        )
        for _ in range(1000)
    ]
    placed = refused = 0
    started = time.perf_counter()
    for demand in demands:
        try:
            place(demand, pools, free)
            placed += 1
        except Exception:
            refused += 1
    placement_s = time.perf_counter() - started
    return {
        "tick_s": round(tick_s, 3),
        "tick_goal_s": 1.0,
        "tick_with_live_listings_dry_run_s": round(dry.elapsed_s, 3),
        "listing_s": listing_s,
        "leases": lease_count,
        "pools": pool_count,
        "units": len(all_units),
        "terminated": len(report.terminated),
        "kept": len(report.kept),
        "placements_per_s": round(1000 / placement_s),
        "placements_goal_per_s": 1000,
        "placements": {"placed": placed, "refused": refused},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leases", type=int, default=10_000, help="leases in the store (500 of them live)")
    parser.add_argument("--pools", type=int, default=50, help="GPU pools across the three backends")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="teardown-bench-") as workdir:
        result = run(args.leases, args.pools, Path(workdir))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
