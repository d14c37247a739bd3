"""PCA + RBF SVM on flattened pixels, with calibrated probabilities.

``SVC(probability=True)`` is deprecated in scikit-learn 1.9, so probabilities come
from ``CalibratedClassifierCV`` (sigmoid calibration of the SVM's decision values).
Inputs are float32 (N, H*W[*C]) in [0, 1].
"""

from __future__ import annotations

from typing import Any

from imgclass.models.registry import register_model


def _space(trial: Any) -> dict[str, Any]:
    return {
        "C": trial.suggest_float("C", 0.5, 50, log=True),
        "gamma": trial.suggest_categorical("gamma", ["scale", 0.01, 0.02, 0.05]),
        "n_components": trial.suggest_categorical("n_components", [30, 50, 80, 0.9]),
    }


@register_model(
    "pca-svm", family="pca-svm", framework="sklearn", default_cfg={"epochs": 1}, search_space=_space
)
def pca_svm(
    num_classes: int,
    n_components: int | float = 50,
    C: float = 10.0,
    gamma: str | float = "scale",
    scale: bool = False,
    calibration_folds: int = 3,
) -> Any:
    """PCA then an RBF SVM, probabilities by sigmoid calibration."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    steps: list[tuple[str, Any]] = []
    if scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("pca", PCA(n_components=n_components, whiten=False, random_state=0)))
    svm = SVC(C=C, gamma=gamma, kernel="rbf")
    steps.append(("svm", CalibratedClassifierCV(svm, method="sigmoid", cv=calibration_folds)))
    return Pipeline(steps)
