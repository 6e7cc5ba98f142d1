"""eu-onprem: synthetic encounters and lab results (restricted) for training without the CDC database.

Used when the example's training runs on its own (tests, ``demo_gpu`` standalone); in the full demo these
tables come from the hospital database through CDC. Seeded: no real person is in here. A latent risk per
patient drives both readmissions and CRP/HbA1c, so a model has something real to learn.
"""

import numpy as np
import pyarrow as pa

from examples.clinical_ai.work.readmission_features import TESTS, WARDS
from hybrid_dagster.plane.work import open_plane_work

UNITS = {"HBA1C": "%", "CRP": "mg/L", "LDL": "mmol/L", "HGB": "g/dL", "K": "mmol/L"}
DAY_US = 86_400 * 1_000_000


def synthetic(patients: int = 400, seed: int = 5) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    enc_rows: dict[str, list] = {
        k: [] for k in ("encounter_id", "patient_id", "ward", "admitted_at", "discharged_at")
    }
    lab_rows: dict[str, list] = {
        k: [] for k in ("result_id", "encounter_id", "test_code", "value", "unit", "abnormal", "taken_at")
    }
    encounter_id = result_id = 0
    for patient in range(1, patients + 1):
        risk = rng.normal()
        t = start + int(rng.integers(0, 200)) * DAY_US
        for _ in range(int(rng.integers(1, 5))):
            encounter_id += 1
            stay = max(1, int(rng.gamma(2.0, 2.0 + max(risk, 0))))
            admitted, discharged = t, t + stay * DAY_US
            enc_rows["encounter_id"].append(encounter_id)
            enc_rows["patient_id"].append(patient)
            enc_rows["ward"].append(str(rng.choice(WARDS)))
            enc_rows["admitted_at"].append(admitted)
            enc_rows["discharged_at"].append(discharged)
            for test in TESTS:
                result_id += 1
                base = {"HBA1C": 5.6, "CRP": 5.0, "LDL": 3.0, "HGB": 13.5, "K": 4.2}[test]
                shift = {"HBA1C": 0.8, "CRP": 12.0}.get(test, 0.0) * risk
                value = float(base + shift + rng.normal(0, base * 0.1))
                lab_rows["result_id"].append(result_id)
                lab_rows["encounter_id"].append(encounter_id)
                lab_rows["test_code"].append(test)
                lab_rows["value"].append(value)
                lab_rows["unit"].append(UNITS[test])
                lab_rows["abnormal"].append(bool(value > base * 1.3))
                lab_rows["taken_at"].append(admitted + DAY_US // 2)
            readmit_days = (
                rng.integers(3, 30)
                if rng.random() < 1 / (1 + np.exp(-(1.5 * risk - 0.8)))
                else rng.integers(45, 200)
            )
            t = discharged + int(readmit_days) * DAY_US
    ts = pa.timestamp("us", tz="UTC")
    encounters = pa.table(
        {
            "encounter_id": pa.array(enc_rows["encounter_id"], pa.int64()),
            "patient_id": pa.array(enc_rows["patient_id"], pa.int64()),
            "ward": pa.array(enc_rows["ward"], pa.string()),
            "admitted_at": pa.array(enc_rows["admitted_at"], pa.int64()).cast(ts),
            "discharged_at": pa.array(enc_rows["discharged_at"], pa.int64()).cast(ts),
        }
    )
    labs = pa.table(
        {
            "result_id": pa.array(lab_rows["result_id"], pa.int64()),
            "encounter_id": pa.array(lab_rows["encounter_id"], pa.int64()),
            "test_code": pa.array(lab_rows["test_code"], pa.string()),
            "value": pa.array(lab_rows["value"], pa.float64()),
            "unit": pa.array(lab_rows["unit"], pa.string()),
            "abnormal": pa.array(lab_rows["abnormal"], pa.bool_()),
            "taken_at": pa.array(lab_rows["taken_at"], pa.int64()).cast(ts),
        }
    )
    return encounters, labs


if __name__ == "__main__":
    with open_plane_work() as work:
        encounters, labs = synthetic()
        work.report(
            "clinical/encounters", work.write_table("clinical/encounters", "clinical.encounters", encounters)
        )
        work.report(
            "clinical/lab_results", work.write_table("clinical/lab_results", "clinical.lab_results", labs)
        )
