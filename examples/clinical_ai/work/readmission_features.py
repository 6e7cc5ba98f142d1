"""Features and labels for 30-day readmission risk, from encounters and lab results (runs in a plane).

Label: the patient is admitted again within 30 days after this encounter's discharge. Features: ward
(one-hot), length of stay, number of earlier encounters, mean value per lab test and the count of abnormal
results. Encounters not yet discharged are left out.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WARDS = ["cardiology", "oncology", "pediatrics", "icu", "neurology", "maternity"]
TESTS = ["HBA1C", "CRP", "LDL", "HGB", "K"]
FEATURES = (
    [f"ward={w}" for w in WARDS]
    + ["length_of_stay_days", "prior_encounters", "abnormal_labs"]
    + [f"lab_mean={t}" for t in TESTS]
)
THIRTY_DAYS_US = 30 * 24 * 3600 * 1_000_000


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    as_us = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(pc.fill_null(as_us, np.iinfo(np.int64).min).to_numpy(), dtype=np.int64)


def readmission_dataset(encounters: pa.Table, labs: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: one row per discharged encounter, columns :data:`FEATURES`."""
    order = pc.sort_indices(encounters, [("patient_id", "ascending"), ("admitted_at", "ascending")])
    enc = encounters.take(order)
    missing = np.iinfo(np.int64).min
    patients = enc.column("patient_id").to_numpy()
    admitted = _micros(enc.column("admitted_at"))
    discharged = _micros(enc.column("discharged_at"))
    wards = enc.column("ward").to_pylist()
    n = enc.num_rows

    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = patients[1:] == patients[:-1]
    next_admitted = np.empty(n, dtype=np.int64)
    next_admitted[:-1] = admitted[1:]
    next_admitted[-1:] = missing
    gap = next_admitted - discharged
    label = same_next & (discharged != missing) & (gap > 0) & (gap <= THIRTY_DAYS_US)

    starts = np.ones(n, dtype=bool)
    starts[1:] = patients[1:] != patients[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    prior = np.arange(n) - group_start

    row_of = {int(e): i for i, e in enumerate(enc.column("encounter_id").to_pylist())}
    lab_rows = np.array(
        [row_of.get(int(e), -1) for e in labs.column("encounter_id").to_pylist()], dtype=np.int64
    )
    known = lab_rows >= 0
    values = pc.fill_null(labs.column("value"), np.nan).to_numpy(zero_copy_only=False).astype(float)
    abnormal = pc.fill_null(labs.column("abnormal"), False).to_numpy(zero_copy_only=False).astype(float)
    codes = labs.column("test_code").to_pylist()
    sums = np.zeros((n, len(TESTS)))
    counts = np.zeros((n, len(TESTS)))
    abnormal_count = np.zeros(n)
    np.add.at(abnormal_count, lab_rows[known], abnormal[known])
    for t, test in enumerate(TESTS):
        pick = known & np.array([c == test for c in codes], dtype=bool) & ~np.isnan(values)
        np.add.at(sums[:, t], lab_rows[pick], values[pick])
        np.add.at(counts[:, t], lab_rows[pick], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lab_means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    ward_onehot = np.array([[1.0 if w == ward else 0.0 for ward in WARDS] for w in wards]).reshape(
        n, len(WARDS)
    )
    stay_days = np.where(discharged != missing, (discharged - admitted) / 86_400e6, np.nan)
    X = np.column_stack([ward_onehot, stay_days, prior, abnormal_count, lab_means])
    keep = discharged != missing
    return X[keep], label[keep].astype(int)
