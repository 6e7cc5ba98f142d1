"""GPU pool's plane (EU): 30-day readmission risk from encounters and lab results, a scikit-learn model.

Runs inside the plane through Dagster Pipes; only metrics, counts, snapshot ids and the model's path leave.
"""

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from examples.clinical_ai.work.readmission_features import readmission_dataset
from hybrid_dagster.plane.models import open_training


def train(X: np.ndarray, y: np.ndarray, seed: int = 7) -> tuple[Pipeline, dict[str, float]]:
    stratify = y if 0 < y.sum() < len(y) - 1 and min(y.sum(), len(y) - y.sum()) >= 2 else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=stratify
    )
    model = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=1000, class_weight="balanced")),
        ]
    )
    model.fit(X_train, y_train)
    scores = model.predict_proba(X_test)[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(y_test, scores >= 0.5)),
        "brier": float(brier_score_loss(y_test, scores)),
        "positive_rate": float(y.mean()),
        "test_rows": float(len(y_test)),
    }
    if 0 < y_test.sum() < len(y_test):
        metrics["roc_auc"] = float(roc_auc_score(y_test, scores))
        metrics["average_precision"] = float(average_precision_score(y_test, scores))
    return model, metrics


if __name__ == "__main__":
    with open_training() as training:
        encounters = training.read("clinical.encounters")
        labs = training.read("clinical.lab_results")
        X, y = readmission_dataset(encounters, labs)
        model, metrics = train(X, y)
        training.finish(model, metrics, training_rows=len(y))
