"""A GPU fleet for the teardown demo and tests: EC2 instances (moto over HTTP) in every interesting state.

- ``gpu-idle``: no run has held a lease on it since it was launched - torn down.
- ``gpu-busy``: a live run holds a lease on it - kept.
- ``gpu-protected``: idle, but tagged ``hybrid-dagster/protected=true`` - kept.
- ``gpu-a``: re-created under the same name. Its predecessor was idle for hours and was torn down; the new
  incarnation ran a job five minutes ago - kept (the idle clock belongs to the incarnation, not the name).
- ``gpu-unreadable``: its GPU tag cannot be parsed, so its state is unknown - kept (counts as busy).

Example:
    >>> fleet = launch_fleet(ec2_client, store, pool="us-cloud-a10g", now=time.time() + 2 * 3600)
    >>> fleet["gpu-idle"]
    'i-...'
"""

from __future__ import annotations

from typing import Any

from hybrid_dagster.gpu.backends.base import GPUS_LABEL, POOL_LABEL, PROTECTED_LABEL
from hybrid_dagster.gpu.leases import LeaseStore

IMAGE_ID = "ami-12c6146b"  # any image id works against moto; a real fleet uses the pool's GPU AMI


def launch(ec2: Any, pool: str, name: str, **tags: str) -> str:
    """Launch one tagged GPU instance; returns its instance id (its incarnation)."""
    all_tags = {"Name": name, POOL_LABEL: pool, GPUS_LABEL: "4", **tags}
    reply = ec2.run_instances(
        ImageId=IMAGE_ID,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.12xlarge",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}
        ],
    )
    return str(reply["Instances"][0]["InstanceId"])


def launch_fleet(ec2: Any, store: LeaseStore, *, pool: str, capacity: int, now: float) -> dict[str, str]:
    """Launch the fleet described in the module docstring, as seen at time ``now``; name -> instance id."""
    fleet = {
        "gpu-idle": launch(ec2, pool, "gpu-idle"),
        "gpu-busy": launch(ec2, pool, "gpu-busy"),
        "gpu-protected": launch(ec2, pool, "gpu-protected", **{PROTECTED_LABEL: "true"}),
        "gpu-unreadable": launch(ec2, pool, "gpu-unreadable", **{GPUS_LABEL: "four"}),
    }
    busy = store.acquire(
        pool, gpus=2, capacity=capacity, run_id="run-busy", incarnation=fleet["gpu-busy"], now=now
    )
    store.heartbeat(busy.lease_id, now=now)

    old = launch(ec2, pool, "gpu-a")
    past = store.acquire(
        pool, gpus=1, capacity=capacity, run_id="run-old", incarnation=old, now=now - 4 * 3600
    )
    store.release(past.lease_id, "run succeeded", now=now - 3 * 3600)
    ec2.terminate_instances(InstanceIds=[old])  # the predecessor went away (e.g. an earlier tick)
    fleet["gpu-a (old)"] = old

    fleet["gpu-a"] = launch(ec2, pool, "gpu-a")
    recent = store.acquire(
        pool, gpus=1, capacity=capacity, run_id="run-recent", incarnation=fleet["gpu-a"], now=now - 20 * 60
    )
    store.release(recent.lease_id, "run succeeded", now=now - 5 * 60)
    return fleet
