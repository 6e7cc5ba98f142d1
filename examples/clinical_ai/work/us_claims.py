"""us-onprem: synthetic claims of the US hospitals (restricted), generated inside the plane."""

import numpy as np
import pyarrow as pa

from hybrid_dagster.plane.work import open_plane_work

WARDS = ["cardiology", "oncology", "pediatrics", "icu", "neurology", "maternity"]


def claims(rows: int = 5_000, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "claim_id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            "member_id": pa.array(rng.integers(1, rows // 3, rows, dtype=np.int64)),
            "ward": pa.array(rng.choice(WARDS, rows)),
            "amount_usd": pa.array(np.round(rng.gamma(2.0, 900.0, rows), 2)),
        }
    )


if __name__ == "__main__":
    with open_plane_work() as work:
        work.report("us/claims", work.write_table("us/claims", "claims.claims", claims()))
