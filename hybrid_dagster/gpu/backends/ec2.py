"""EC2 backend: GPU instances found by their pool tag (boto3), terminated by instance id.

Correctness rules: an instance is identified by its instance id (its incarnation), never by its Name tag;
an instance in a transitional state (pending, stopping, shutting-down) or with an unreadable GPU tag
counts as unreadable, hence busy; only running instances burn compute money and can be idle; a failed
``DescribeInstances`` makes the whole listing unreadable.

Example:
    >>> backend = Ec2Backend(region="eu-central-1")
    >>> [u.incarnation for u in backend.list(["eu-cloud-h100"]).units]
    ['i-0a1b2c3d4e5f60789']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_dagster.gpu.backends.base import (
    GPUS_LABEL,
    LEASE_LABEL,
    POOL_LABEL,
    PROTECTED_LABEL,
    RUN_LABEL,
    GpuBackend,
    Listing,
    parse_gpus,
)
from hybrid_dagster.gpu.errors import BackendUnavailable
from hybrid_dagster.gpu.model import CapacityUnit

LISTED_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
TRANSITIONAL = {"pending", "stopping", "shutting-down"}


class Ec2Backend(GpuBackend):
    """GPU instances of cloud pools in one AWS region (or an EC2-compatible endpoint).

    Example:
        >>> Ec2Backend(region="us-east-1", endpoint_url="http://127.0.0.1:5000")  # moto in tests
    """

    kind = "ec2"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        default_gpus: Mapping[str, int] | None = None,
        client: Any = None,
    ) -> None:
        import boto3

        self.region = region
        self.endpoint_url = endpoint_url
        self.default_gpus = dict(default_gpus or {})
        self.client = client or boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)

    def key(self) -> str:
        return f"ec2:{self.region}:{self.endpoint_url or ''}"

    def list(self, pools: Sequence[str]) -> Listing:
        import botocore.exceptions

        filters = [
            {"Name": f"tag:{POOL_LABEL}", "Values": list(pools)},
            {"Name": "instance-state-name", "Values": LISTED_STATES},
        ]
        units: list[CapacityUnit] = []
        try:
            pages = self.client.get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for reservation in page.get("Reservations", []):
                    units.extend(self._unit(i) for i in reservation.get("Instances", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            return Listing(
                self.kind, error=f"DescribeInstances failed: {type(error).__name__}", pools=tuple(pools)
            )
        return Listing(self.kind, units=units, pools=tuple(pools))

    def _unit(self, instance: Mapping[str, Any]) -> CapacityUnit:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        pool = tags.get(POOL_LABEL, "?")
        state = str(instance.get("State", {}).get("Name", "unknown"))
        gpus = parse_gpus(tags.get(GPUS_LABEL), self.default_gpus.get(pool, 1))
        launched = instance.get("LaunchTime")
        why: str | None = None
        if state in TRANSITIONAL:
            why = f"instance state {state} is in transition"
        elif state not in {"running", "stopped"}:
            why = f"instance state {state!r} is not known"
        elif gpus is None:
            why = f"tag {GPUS_LABEL} is not a GPU count"
        elif launched is None:
            why = "no launch time reported"
        return CapacityUnit(
            backend=self.kind,
            pool=pool,
            incarnation=str(instance["InstanceId"]),
            name=tags.get("Name", str(instance["InstanceId"])),
            gpus=gpus or 0,
            launched_at=launched.timestamp() if launched is not None else None,
            state=state,
            readable=why is None,
            why_unreadable=why,
            protected=tags.get(PROTECTED_LABEL, "").lower() == "true",
            lease_id=tags.get(LEASE_LABEL),
            run_id=tags.get(RUN_LABEL),
            kind="instance",
        )

    def terminate_many(self, units: Sequence[CapacityUnit]) -> dict[str, str | None]:
        """One ``TerminateInstances`` call for up to 1,000 instance ids at a time."""
        outcome: dict[str, str | None] = {}
        for start in range(0, len(units), 1000):
            batch = list(units[start : start + 1000])
            try:
                self._terminate_ids([u.incarnation for u in batch], f"{len(batch)} instances")
                outcome.update(dict.fromkeys((u.incarnation for u in batch), None))
            except BackendUnavailable as refused:
                outcome.update(dict.fromkeys((u.incarnation for u in batch), str(refused)))
        return outcome

    def terminate(self, unit: CapacityUnit) -> None:
        self._terminate_ids([unit.incarnation], f"{unit.incarnation} ({unit.name!r}, pool {unit.pool!r})")

    def _terminate_ids(self, ids: Sequence[str], what: str) -> None:
        import botocore.exceptions

        try:
            self.client.terminate_instances(InstanceIds=list(ids))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise BackendUnavailable(
                f"EC2 TerminateInstances for {what} in {self.region} failed: {type(error).__name__}; "
                "check the IAM policy of the sensor's role"
            ) from None
