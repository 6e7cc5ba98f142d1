"""GPU pool's plane (EU): 30-day readmission risk from encounters and lab results, a scikit-learn model.

Runs inside the plane through Dagster Pipes; only metrics, counts, snapshot ids and the model's path leave.
"""

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from examples.clinical_ai.work.readmission_features import readmission_dataset
from hybrid_dagster.plane.models import open_training


def _model() -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(max_iter=1000, class_weight="balanced")),
        ]
    )


def train(X: np.ndarray, y: np.ndarray, seed: int = 7) -> tuple[Pipeline, dict[str, float]]:
    """Fit on every row; the metrics are out-of-fold, from repeated stratified cross-validation.

    A plane's table can be small (the demo's hospital has about 120 discharged encounters, 1 in 10
    readmitted): a single 25% hold-out then holds about 3 readmissions, and its ROC AUC moves by +-0.2
    between runs. Averaging 4 repetitions of up to 5 stratified folds scores every row 4 times.
    """
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    metrics = {"positive_rate": float(y.mean()) if len(y) else 0.0, "test_rows": float(len(y))}
    folds = min(5, positives, negatives)
    if folds >= 2:
        cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=4, random_state=seed)
        scores = cross_validate(
            _model(), X, y, cv=cv, scoring=["roc_auc", "average_precision", "accuracy", "neg_brier_score"]
        )
        metrics["roc_auc"] = float(np.mean(scores["test_roc_auc"]))
        metrics["average_precision"] = float(np.mean(scores["test_average_precision"]))
        metrics["accuracy"] = float(np.mean(scores["test_accuracy"]))
        metrics["brier"] = float(-np.mean(scores["test_neg_brier_score"]))
    model = _model()
    model.fit(X, y)
    return model, metrics


if __name__ == "__main__":
    with open_training() as training:
        encounters = training.read("clinical.encounters")
        labs = training.read("clinical.lab_results")
        X, y = readmission_dataset(encounters, labs)
        model, metrics = train(X, y)
        training.finish(model, metrics, training_rows=len(y))
