"""PCA + RBF SVM on flattened pixels, with calibrated probabilities.

Inputs are float32 (N, H*W[*C]) in [0, 1]; labels int64 (N,) (skl2onnx cannot
export a classifier fitted on uint8 labels). ``SVC(probability=True)`` is
deprecated in scikit-learn 1.9, so probabilities come from
``CalibratedClassifierCV`` (sigmoid calibration of the SVM's decision values,
cross-validated). With ``ensemble=False`` (the default) one SVM is fitted on all the
data and calibrated from cross-validated decision values: the exported graph then
holds one SVM rather than one per fold, so serving is ``calibration_folds`` times
cheaper, at the same accuracy. skl2onnx converts the pipeline, and a grid search
over it, to a plain float ``probabilities`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imgclass.errors import ConfigError
from imgclass.models.registry import register_model


def _space(trial: Any) -> dict[str, Any]:
    """What ``imgclass tune`` searches: the SVM's C and gamma, the components kept."""
    return {
        "model.C": trial.suggest_float("C", 0.5, 50, log=True),
        "model.gamma": trial.suggest_categorical("gamma", ["scale", 0.01, 0.02, 0.05]),
        "model.n_components": trial.suggest_categorical("n_components", [30, 50, 80, 0.9]),
    }


def check_n_components(value: int | float) -> int | float:
    """An int >= 1 (components kept) or a float in (0, 1) (fraction of variance kept)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"n_components must be a number, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise ConfigError(f"n_components as a variance fraction must be in (0, 1), got {value}")
        return value
    if value < 1:
        raise ConfigError(f"n_components must be at least 1, got {value}")
    return int(value)


def build_pipeline(
    n_components: int | float, C: float, gamma: str | float, scale: bool, folds: int, ensemble: bool
) -> Any:
    """[StandardScaler ->] PCA -> calibrated RBF SVC, as an unfitted Pipeline."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    steps: list[tuple[str, Any]] = []
    if scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("pca", PCA(n_components=check_n_components(n_components), random_state=0)))
    svm = SVC(C=C, gamma=gamma, kernel="rbf")
    calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=ensemble)
    steps.append(("svm", calibrated))
    return Pipeline(steps)


def wrap_grid_search(
    pipeline: Any,
    C: Sequence[float] | None,
    gamma: Sequence[str | float] | None,
    n_components: Sequence[int | float] | None,
    folds: int,
    n_jobs: int,
) -> Any:
    """The pipeline wrapped in GridSearchCV over the given values (refit on all data)."""
    from sklearn.model_selection import GridSearchCV

    grid: dict[str, list[Any]] = {}
    if C:
        grid["svm__estimator__C"] = list(C)
    if gamma:
        grid["svm__estimator__gamma"] = list(gamma)
    if n_components:
        grid["pca__n_components"] = [check_n_components(n) for n in n_components]
    if not grid:
        raise ConfigError("grid_search needs at least one of grid_C, grid_gamma, grid_n_components")
    return GridSearchCV(pipeline, grid, cv=folds, n_jobs=n_jobs, refit=True)


@register_model(
    "pca-svm",
    family="pca-svm",
    framework="sklearn",
    default_cfg={"epochs": 1},
    search_space=_space,
    test_cfg={"n_components": 20},
)
def pca_svm(
    num_classes: int,  # noqa: ARG001 - every factory gets it; the SVM learns classes from y
    n_components: int | float = 50,
    C: float = 10.0,
    gamma: str | float = "scale",
    scale: bool = False,
    calibration_folds: int = 3,
    ensemble: bool = False,
    grid_search: bool = False,
    grid_C: Sequence[float] | None = (1.0, 5.0, 10.0),
    grid_gamma: Sequence[str | float] | None = None,
    grid_n_components: Sequence[int | float] | None = (40, 60),
    grid_folds: int = 3,
    n_jobs: int = 1,
) -> Any:
    """PCA then an RBF SVM, probabilities by sigmoid calibration; optional grid search.

    n_components: components kept (int) or fraction of the variance kept (float < 1).
    grid_search: search ``grid_C`` x ``grid_gamma`` x ``grid_n_components`` by
    ``grid_folds``-fold cross-validation and keep the best (``best_params_``).
    """
    pipeline = build_pipeline(n_components, C, gamma, scale, calibration_folds, ensemble)
    if not grid_search:
        return pipeline
    return wrap_grid_search(pipeline, grid_C, grid_gamma, grid_n_components, grid_folds, n_jobs)
