"""GPU pool's plane (US): which claims will be high-cost (top quartile), a scikit-learn model on US claims.

Runs inside the plane through Dagster Pipes; only metrics, counts, snapshot ids and the model's path leave.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

from examples.clinical_ai.work.readmission_features import WARDS
from hybrid_dagster.plane.models import open_training


def claims_dataset(claims: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: ward one-hot and the member's claim count; label: amount in the top quartile."""
    amounts = claims.column("amount_usd").to_numpy()
    threshold = float(np.quantile(amounts, 0.75))
    members = claims.column("member_id").to_numpy()
    per_member = pc.value_counts(claims.column("member_id"))
    count_of = dict(
        zip(per_member.field("values").to_pylist(), per_member.field("counts").to_pylist(), strict=True)
    )
    wards = claims.column("ward").to_pylist()
    X = np.column_stack(
        [
            np.array([[1.0 if w == ward else 0.0 for ward in WARDS] for w in wards]),
            np.array([count_of[int(m)] for m in members], dtype=float),
        ]
    )
    return X, (amounts > threshold).astype(int)


if __name__ == "__main__":
    with open_training() as training:
        X, y = claims_dataset(training.read("claims.claims"))
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=11, stratify=y)
        model = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=11).fit(X_train, y_train)
        scores = model.predict_proba(X_test)[:, 1]
        metrics = {
            "roc_auc": float(roc_auc_score(y_test, scores)),
            "accuracy": float(accuracy_score(y_test, scores >= 0.5)),
            "positive_rate": float(y.mean()),
            "test_rows": float(len(y_test)),
        }
        training.finish(model, metrics, training_rows=len(y))
