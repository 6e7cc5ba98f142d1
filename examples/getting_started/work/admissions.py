"""Runs inside eu-onprem: writes synthetic admissions (restricted) to the plane's Iceberg catalog."""

import numpy as np
import pyarrow as pa

from hybrid_dagster.plane.work import open_plane_work

WARDS = ["cardiology", "oncology", "pediatrics", "icu"]


def synthetic_admissions(rows: int = 400, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "patient_id": pa.array(rng.integers(1, 200, rows, dtype=np.int64)),
            "ward": pa.array(rng.choice(WARDS, rows)),
        }
    )


if __name__ == "__main__":
    with open_plane_work() as work:
        metadata = work.write_table("clinic/admissions", "clinic.admissions", synthetic_admissions())
        work.report("clinic/admissions", metadata)  # counts and schema cross back, never rows
