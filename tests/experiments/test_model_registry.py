"""The model registry against a real MLflow store in a temporary folder: register,
aliases, promote and rollback, verified fetches, the ``imgclass models`` commands."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

from imgclass.cli import main
from imgclass.errors import RegistryError
from imgclass.experiments.model_registry import ModelRegistry, bundle_digest
from mlflow_support import fresh_store

LABELS = ["zero", "one", "two"]


def constant_bundle(out: Path, winner: int, accuracy: float = 0.5) -> Path:
    """A real bundle (real save_bundle, real ONNX) whose model always ranks class
    ``winner`` first, whatever the picture: two of them answer distinguishably."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    k = len(LABELS)
    bias = np.full(k, -2.0, np.float32)
    bias[winner] = 2.0
    nodes = [
        helper.make_node("Flatten", ["input"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        [
            numpy_helper.from_array(np.zeros((784, k), np.float32), "w"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    spec = {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}
    return save_bundle(
        out,
        model.SerializeToString(),
        LABELS,
        {"recipe": get_recipe("none"), "input": spec},
        {"test": {"accuracy": accuracy, "n": 10}},
        {
            "name": "constant",
            "family": "test",
            "framework": "onnx",
            "input_kind": "image",
            "args": {"winner": winner},
            "num_classes": k,
            "dataset": {"path": "/nowhere/digits", "manifest_sha256": "0" * 64},
        },
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("reg-bundles")
    return (
        constant_bundle(root / "a" / "bundle", 0, 0.61),
        constant_bundle(root / "b" / "bundle", 1, 0.72),
        constant_bundle(root / "c" / "bundle", 2, 0.83),
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    return fresh_store(tmp_path / "mlflow.db")


def test_register_promote_rollback(store, bundles, tmp_path):
    reg = ModelRegistry(store)
    v1 = reg.register(bundles[0], "digits", alias="champion", description="first")
    assert (v1.version, v1.aliases) == (1, ("champion",))
    assert v1.tags["imgclass.bundle_sha256"] == bundle_digest(bundles[0])
    assert v1.tags["imgclass.model"] == "constant"
    assert v1.test_accuracy == pytest.approx(0.61)
    assert v1.run_id and v1.source.endswith("/bundle")
    assert v1.description == "first"
    v2 = reg.register(bundles[1], "digits", alias="challenger")
    assert (v2.version, v2.aliases) == (2, ("challenger",))
    assert reg.get("digits").version == 1
    assert reg.get("digits", "challenger").version == 2
    assert reg.get("digits", "2") == reg.get("digits", 2)
    assert reg.names() == ["digits"]
    assert [v.version for v in reg.versions("digits")] == [2, 1]

    promoted = reg.promote("digits", 2)
    assert promoted.aliases == ("champion",)  # the challenger alias went with the win
    assert reg.get("digits", "previous-champion").version == 1
    reg.register(bundles[2], "digits")
    reg.promote("digits", 3)
    assert reg.get("digits").version == 3
    assert reg.rollback("digits").version == 2
    assert reg.get("digits", "previous-champion").version == 1
    assert reg.rollback("digits").version == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("digits")
    assert reg.get("digits").version == 1
    assert "previous-champion" not in reg.get("digits").aliases


def test_promoting_the_champion_again_changes_nothing(store, bundles):
    reg = ModelRegistry(store)
    reg.register(bundles[0], "m", alias="champion")
    reg.promote("m", 1)
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("m")


def test_clear_errors(store, bundles, tmp_path):
    reg = ModelRegistry(store)
    with pytest.raises(RegistryError, match="no model named 'ghost'.*nothing is registered"):
        reg.get("ghost")
    reg.register(bundles[0], "digits")
    with pytest.raises(RegistryError, match="no model named 'ghost'.*registered: digits"):
        reg.promote("ghost", 1)
    with pytest.raises(RegistryError, match="digits has no version 9 \\(versions: 1\\)"):
        reg.promote("digits", 9)
    with pytest.raises(RegistryError, match="no alias 'champion'.*imgclass models promote"):
        reg.get("digits")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register(bundles[0], "no spaces please")
    with pytest.raises(RegistryError, match="invalid alias"):
        reg.set_alias("digits", "v2", 1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    with pytest.raises(RegistryError, match="not a usable bundle"):
        reg.register(broken, "digits")
    assert [v.version for v in reg.versions("digits")] == [1]  # nothing half-registered


def test_unreachable_store_is_a_clear_error(tmp_path, bundles):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker}/sub/mlflow.db"
    reg = ModelRegistry(uri)
    where = re.escape(f"model registry at {uri}; check --tracking-uri / MLFLOW_TRACKING_URI")
    with pytest.raises(RegistryError, match=rf"Not a directory.*\({where}\)"):
        reg.names()


def test_fetch_bundle_verifies_and_reuses_the_cache(store, bundles, tmp_path):
    from imgclass.bundle import load_bundle

    reg = ModelRegistry(store)
    reg.register(bundles[0], "digits", alias="champion")
    cache = tmp_path / "cache"
    path = reg.fetch_bundle("digits", cache_dir=cache)
    assert path == (cache / "digits" / "1").resolve()
    assert bundle_digest(path) == bundle_digest(bundles[0])
    assert load_bundle(path).labels == LABELS
    stamp = (path / "model.onnx").stat().st_mtime_ns
    assert reg.fetch_bundle("digits", 1, cache_dir=cache) == path  # reused, not fetched
    assert (path / "model.onnx").stat().st_mtime_ns == stamp

    (path / "labels.json").write_text(json.dumps(["a", "b", "c"]))  # tampered with
    again = reg.fetch_bundle("digits", cache_dir=cache)
    assert json.loads((again / "labels.json").read_text()) == LABELS
    assert not [p for p in (cache / "digits").iterdir() if p.name.startswith(".")]


def test_fetch_refuses_a_corrupt_stored_bundle(store, bundles, tmp_path):
    reg = ModelRegistry(store)
    info = reg.register(bundles[0], "digits", alias="champion")
    stored = Path(info.source.removeprefix("file://")) / "model.onnx"
    stored.write_bytes(stored.read_bytes() + b"x")
    cache = tmp_path / "cache"
    with pytest.raises(RegistryError, match="does not match the sha256"):
        reg.fetch_bundle("digits", cache_dir=cache)
    assert not (cache / "digits" / "1").exists()


def test_register_reuses_the_training_run(store, bundles, tmp_path):
    """A bundle whose run folder names a run of this store holding the same bundle is
    registered from that run's artifacts, not copied again."""
    from mlflow.tracking import MlflowClient

    from imgclass.experiments.mlflow_store import ensure_experiment
    from imgclass.experiments.tracking import write_run_file

    run_dir = tmp_path / "run"
    bundle = constant_bundle(run_dir / "bundle", 1)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = ensure_experiment("imgclass", store)
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(bundle), "bundle")
    write_run_file(run_dir, store, experiment, run.info.run_id)
    info = ModelRegistry(store).register(run_dir, "trained")
    assert info.run_id == run.info.run_id
    assert info.source == f"{run.info.artifact_uri}/bundle"

    other = tmp_path / "other"  # the same run file, but a bundle made later: not reused
    constant_bundle(other / "bundle", 2)
    write_run_file(other, store, experiment, run.info.run_id)
    assert ModelRegistry(store).register(other / "bundle", "trained").run_id != run.info.run_id


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_cli(store, bundles, tmp_path, capsys):
    uri = ["--tracking-uri", store]
    code, out, _ = run_cli(
        capsys, "-q", "models", "register", str(bundles[0]), "--name", "dg", "--promote", *uri,
        "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["aliases"] == ["champion"]
    code, out, _ = run_cli(
        capsys, "-q", "models", "register", str(bundles[1].parent), "--name", "dg", *uri,
        "--tag", "note=second", "--json",
    )  # fmt: skip
    second = json.loads(out)
    assert (second["version"], second["tags"]["note"]) == (2, "second")

    code, out, _ = run_cli(capsys, "-q", "models", "list", *uri)
    assert code == 0 and "dg" in out and "champion" in out and "0.72" in out
    code, out, _ = run_cli(capsys, "-q", "models", "list", *uri, "--json")
    rows = json.loads(out)["versions"]
    assert [(r["name"], r["version"]) for r in rows] == [("dg", 2), ("dg", 1)]

    code, out, _ = run_cli(capsys, "-q", "models", "promote", "dg", "2", *uri, "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    code, out, _ = run_cli(capsys, "-q", "models", "show", "dg", *uri, "--json")
    assert json.loads(out)["version"] == 2
    code, out, _ = run_cli(capsys, "-q", "models", "rollback", "dg", *uri)
    assert code == 0 and "version 1" in out
    cache = tmp_path / "cache"
    code, out, _ = run_cli(
        capsys, "-q", "models", "fetch", "dg", "--cache-dir", str(cache), *uri, "--json"
    )
    fetched = json.loads(out)
    assert fetched["version"] == 1 and Path(fetched["path"]) == (cache / "dg" / "1").resolve()

    code, _, err = run_cli(capsys, "-q", "models", "rollback", "dg", *uri)
    assert code == 2 and err.startswith("error: dg has no previous champion")
    assert "Traceback" not in err
    code, _, err = run_cli(capsys, "-q", "models", "promote", "nope", "1", *uri)
    assert code == 2 and "no model named 'nope'" in err
    code, _, err = run_cli(capsys, "-q", "models", "register", str(tmp_path), "--name", "x", *uri)
    assert code == 2 and "not a usable bundle" in err


def test_created_is_iso_time(store, bundles):
    info = ModelRegistry(store).register(bundles[0], "t")
    assert time.strptime(info.created, "%Y-%m-%dT%H:%M:%SZ")


def test_promotion_wording_names_the_champion_once_and_never_none(store, bundles, capsys, caplog):
    uri = ["--tracking-uri", store]
    for bundle in bundles[:2]:
        code, _, _ = run_cli(capsys, "-q", "models", "register", str(bundle), "--name", "w", *uri)
        assert code == 0
    with caplog.at_level(logging.INFO, logger="imgclass.experiments.model_registry"):
        code, out, _ = run_cli(capsys, "models", "promote", "w", "1", *uri)
        assert code == 0 and out == "w: champion is now version 1\n"
        code, out, _ = run_cli(capsys, "models", "promote", "w", "2", *uri)
        assert code == 0 and out == "w: champion is now version 2\n"
        code, out, _ = run_cli(capsys, "models", "rollback", "w", *uri)
        assert code == 0 and out == "w: rolled back: champion is now version 1\n"
    logged = [r.getMessage() for r in caplog.records]
    assert "w: champion is now version 1 (the first champion)" in logged
    assert "w: champion is now version 2 (was version 1)" in logged
    assert "w: rolled back to version 1 (from version 2)" in logged
    assert not any("None" in line for line in logged)
