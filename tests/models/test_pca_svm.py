"""pca-svm: its options, the grid search, and ONNX export of each."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from imgclass.errors import ConfigError, ModelError
from imgclass.models import create_model
from imgclass.onnx_export import export_sklearn


@pytest.fixture(scope="module")
def digits(shared_data):
    m = np.load(shared_data / "mnist.npz")
    x = m["x_train"][:400].reshape(400, -1).astype(np.float32) / 255.0
    return x, m["y_train"][:400].astype(np.int64)


def test_variance_fraction_keeps_the_components_numpy_says(digits):
    x, _ = digits
    pca = create_model("pca-svm", 10, n_components=0.8).named_steps["pca"].fit(x)
    # Independent reference: singular values of the centred data.
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    ratio = np.cumsum(s**2) / np.sum(s**2)
    assert pca.n_components_ == int(np.searchsorted(ratio, 0.8) + 1)


def test_one_svm_is_exported_unless_ensemble_is_asked_for(digits):
    x, y = digits
    single = create_model("pca-svm", 10, n_components=20).fit(x, y)
    folds = create_model("pca-svm", 10, n_components=20, ensemble=True, scale=True).fit(x, y)
    assert len(single.named_steps["svm"].calibrated_classifiers_) == 1
    assert len(folds.named_steps["svm"].calibrated_classifiers_) == 3
    assert list(folds.named_steps) == ["scale", "pca", "svm"]
    session = ort.InferenceSession(export_sklearn(folds, 784))
    got = session.run(["probabilities"], {"input": x[:7]})[0]
    np.testing.assert_allclose(got, folds.predict_proba(x[:7]), rtol=1e-4, atol=1e-5)


def test_grid_search_picks_from_the_grid_and_exports(digits):
    x, y = digits
    search = create_model(
        "pca-svm",
        10,
        grid_search=True,
        grid_C=[0.1, 10.0],
        grid_n_components=[10, 30],
        grid_folds=2,
        calibration_folds=2,
    ).fit(x[:200], y[:200])
    assert search.best_params_["svm__estimator__C"] in (0.1, 10.0)
    assert search.best_params_["pca__n_components"] in (10, 30)
    assert len(search.cv_results_["params"]) == 4
    session = ort.InferenceSession(export_sklearn(search, 784))
    for batch in (1, 7):
        got = session.run(["probabilities"], {"input": x[:batch]})[0]
        np.testing.assert_allclose(got, search.predict_proba(x[:batch]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "half", True])
def test_bad_n_components_are_config_errors(bad):
    with pytest.raises(ConfigError, match="n_components"):
        create_model("pca-svm", 10, n_components=bad)


def test_empty_grid_is_a_config_error():
    with pytest.raises(ConfigError, match="grid_search needs"):
        create_model("pca-svm", 3, grid_search=True, grid_C=None, grid_n_components=None)


def test_export_errors_name_the_fix(digits):
    x, y = digits
    with pytest.raises(ModelError, match="not fitted"):
        export_sklearn(create_model("pca-svm", 10), 784)
    fitted = create_model("pca-svm", 10, n_components=10).fit(x[:100], y[:100].astype(np.uint8))
    with pytest.raises(ModelError, match="fit it on int64 labels"):
        export_sklearn(fitted, 784)


def test_export_reads_no_deprecated_svc_attribute_and_keeps_the_probabilities(digits):
    import warnings

    from sklearn.svm import SVC

    x, y = digits
    model = create_model("pca-svm", 10, n_components=20).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SVC.probA_ / probB_ warn (scikit-learn >= 1.9)
        onnx_bytes = export_sklearn(model, 784)
    got = ort.InferenceSession(onnx_bytes).run(["probabilities"], {"input": x[:20]})[0]
    np.testing.assert_allclose(got, model.predict_proba(x[:20]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got.argmax(axis=1) == model.predict(x[:20])).all()
    # the model itself is left as it was: its SVC is still a plain SVC
    assert type(model.named_steps["svm"].calibrated_classifiers_[0].estimator) is SVC
