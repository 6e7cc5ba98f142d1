"""eu-cloud: per-patient lab features (restricted) computed from the on-prem CDC tables, same jurisdiction."""

import pyarrow as pa

from hybrid_dagster.plane.work import open_plane_work


def features(labs: pa.Table, encounters: pa.Table) -> pa.Table:
    joined = labs.join(encounters.select(["encounter_id", "patient_id"]), "encounter_id")
    return joined.group_by(["patient_id", "test_code"]).aggregate(
        [("value", "mean"), ("value", "max"), ("result_id", "count")]
    )


if __name__ == "__main__":
    with open_plane_work() as work:
        labs = work.read_table("eu-onprem", "clinical.lab_results")
        encounters = work.read_table("eu-onprem", "clinical.encounters")
        metadata = work.write_table(
            "features/eu_lab_features", "features.lab_features", features(labs, encounters)
        )
        work.report("features/eu_lab_features", metadata)
