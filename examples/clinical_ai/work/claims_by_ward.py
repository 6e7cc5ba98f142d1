"""us-onprem: claim counts and totals per ward, no identifiers (declassified to internal)."""

import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.plane.work import open_plane_work


def by_ward(claims: pa.Table, k: int = 10) -> pa.Table:
    totals = claims.group_by("ward").aggregate([([], "count_all"), ("amount_usd", "sum")])
    totals = totals.rename_columns(["ward", "claims", "amount_usd"])
    return totals.filter(pc.greater_equal(totals.column("claims"), k))


if __name__ == "__main__":
    with open_plane_work() as work:
        totals = by_ward(work.read_table("us-onprem", "claims.claims"))
        work.report("us/claims_by_ward", work.write_table("us/claims_by_ward", "claims.by_ward", totals))
