"""Re-snapshot one CDC table on demand, inside its plane (``hybrid-dagster cdc resnapshot``).

Correctness rule: the request is one Iceberg commit that empties the table and marks it as being copied
by the job's source (:func:`hybrid_dagster.cdc.snapshots.request_resnapshot`), written through the same
residency guard as every CDC write. The next run of the job copies the table afresh at a new consistent
point, chunk by chunk, and the stream resumes after it; the job's other tables keep streaming.
"""

from __future__ import annotations

from hybrid_dagster.cdc.snapshots import request_resnapshot
from hybrid_dagster.cdc.worker import CdcJobSpec, build_pipeline
from hybrid_dagster.errors import ValueFreeError
from hybrid_dagster.resources.data_plane import DataPlane


class UnknownCdcTableError(ValueFreeError):
    """The table named for a re-snapshot is not one of the job's tables."""


def resnapshot(spec: CdcJobSpec, plane: DataPlane, identifier: str) -> dict[str, str]:
    """Request a re-snapshot of ``identifier`` (an Iceberg table of ``spec``); returns what was done.

    Example:
        >>> resnapshot(spec, plane, "clinical.patients")  # doctest: +SKIP
        {'table': 'clinical.patients', 'source': 'postgres://db:5432/clinic#eu', 'status': 'requested'}
    """
    pipeline = build_pipeline(spec, plane)
    try:
        identifiers = sorted(m.identifier for m in pipeline.tables.values())
        if identifier not in identifiers:
            raise UnknownCdcTableError(
                f"{identifier} is not a table of this CDC job (its tables: {', '.join(identifiers)}); "
                "name the Iceberg table, as in the job spec's 'identifier'"
            )
        if pipeline.applier.before_write is not None:
            pipeline.applier.before_write(identifier)  # the residency guard of every CDC write
        request_resnapshot(pipeline.applier.catalog, identifier, pipeline.source.source_id)
        return {"table": identifier, "source": pipeline.source.source_id, "status": "requested"}
    finally:
        pipeline.source.close()
