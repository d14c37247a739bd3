"""Cached embeddings for frozen backbones: the cache's hits, misses and invalidation,
all-or-nothing writes, damaged files rebuilt with a warning (never unpickled), and the
cached-head fit giving the same complete bundle, which predicts like any other."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from imgclass.bundle import load_bundle
from imgclass.cli import main
from imgclass.data.store import PreparedDataset, manifest_hash
from imgclass.models import create_model
from imgclass.train.embeddings import (
    FeatureExtractor,
    cache_paths,
    load_cached,
    make_key,
    split_features,
)

pytest.importorskip("efficientnet_lite_pytorch")
MODEL = "transfer-efficientnet_lite0"
ARGS = {"in_channels": 1, "input_size": 28, "pretrained": False}


class CountingExtractor(FeatureExtractor):
    """The real extractor, counting the images it runs (to tell a hit from a miss)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.images = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.images += len(x)
        return super().__call__(x)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_model(MODEL, 10, **ARGS).eval()


@pytest.fixture
def ds(digits_dir):
    with PreparedDataset.open(digits_dir) as opened:
        yield opened


def key_for(ds, model, count=40, views=1, augment=None):
    return make_key(manifest_hash(ds.path), "train", count, model, MODEL, ARGS, views, augment)


def test_miss_writes_then_hit_reads_the_same_features(tmp_path, ds, backbone):
    key = key_for(ds, backbone)
    extract = CountingExtractor(backbone)
    first, hit = split_features(ds, key, tmp_path, extract)
    assert not hit and extract.images == 40 and first.shape == (1, 40, 1280)
    array_path, header_path = cache_paths(tmp_path, key)
    header = json.loads(header_path.read_text())
    assert header["key"] == dataclasses.asdict(key) and header["shape"] == [1, 40, 1280]
    again, hit = split_features(ds, key, tmp_path, extract)
    assert hit and extract.images == 40  # nothing run again
    np.testing.assert_array_equal(again, first)
    with torch.no_grad():  # the ONNX features are the torch model's
        x = torch.from_numpy(ds.images("train")[:4]).float()[:, None] / 255
        expected = backbone.features(x).numpy()
    np.testing.assert_allclose(first[0, :4], expected, rtol=1e-3, atol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([array_path.name, header_path.name])


def test_the_key_changes_with_the_data_the_weights_and_the_views(ds, backbone):
    from imgclass.train.config import build_augment

    key = key_for(ds, backbone)
    flips = build_augment({"preset": "flip-crop"})
    changed = [
        dataclasses.replace(key, manifest_sha256="0" * 64),
        key_for(ds, backbone, count=41),
        key_for(ds, backbone, views=2, augment=flips),
        key_for(ds, backbone, views=3, augment=flips),
    ]
    other = create_model(MODEL, 10, **ARGS).eval()  # other random weights
    changed.append(key_for(ds, other))
    digests = {k.digest() for k in changed}
    assert key.digest() not in digests and len(digests) == len(changed)
    assert key_for(ds, backbone).digest() == key.digest()  # and only with them
    mirrored = key_for(ds, backbone, views=2, augment=flips)
    assert mirrored.mirror and mirrored.random_views == 0 and mirrored.augment == ""


def test_views_are_the_image_its_mirror_and_seeded_augmentations(tmp_path, ds, backbone):
    from imgclass.train.config import build_augment

    flips = build_augment({"preset": "flip-crop"})
    key = key_for(ds, backbone, count=8, views=3, augment=flips)
    features, _ = split_features(ds, key, None, FeatureExtractor(backbone), flips)
    with torch.no_grad():
        x = torch.from_numpy(ds.images("train")[:8]).float()[:, None] / 255
        mirror = backbone.features(x.flip(-1)).numpy()
    np.testing.assert_allclose(features[1], mirror, rtol=1e-3, atol=1e-12)
    again, _ = split_features(ds, key, None, FeatureExtractor(backbone), flips)
    np.testing.assert_array_equal(again[2], features[2])  # seeded: the same every time
    change = np.linalg.norm(features[2] - features[0]) / np.linalg.norm(features[0])
    assert change > 0.01  # random weights give tiny features: compare relatively


def test_writes_are_all_or_nothing(tmp_path, ds, backbone, monkeypatch):
    key = key_for(ds, backbone)
    features, _ = split_features(ds, key, tmp_path, FeatureExtractor(backbone))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = key_for(ds, backbone, count=12)

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    _, hit = split_features(ds, other, tmp_path, FeatureExtractor(backbone))  # warns, goes on
    assert not hit
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no part, no tmp
    assert load_cached(tmp_path, other) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled", "header", "swapped"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, ds, backbone, damage, caplog):
    key = key_for(ds, backbone, count=8)
    good, _ = split_features(ds, key, tmp_path, FeatureExtractor(backbone))
    array_path, header_path = cache_paths(tmp_path, key)
    header = json.loads(header_path.read_text())
    if damage == "garbage":
        array_path.write_bytes(b"\x93NUMPY not really" * 10)
    elif damage == "truncated":
        array_path.write_bytes(array_path.read_bytes()[:-100])
    elif damage == "header":
        header_path.write_text('{"key": ')
    elif damage == "swapped":  # a sound array of other numbers, its header made to match
        np.save(array_path, good * 2)
        header["sha256"] = __import__("hashlib").sha256(array_path.read_bytes()).hexdigest()
        header["key"]["count"] = 9
        header_path.write_text(json.dumps(header))
    else:  # an object array (pickle inside), with a header whose sha256 matches it
        np.save(array_path, np.array([{"evil": 1}] * 8, dtype=object), allow_pickle=True)
        header["sha256"] = __import__("hashlib").sha256(array_path.read_bytes()).hexdigest()
        header_path.write_text(json.dumps(header))
    extract = CountingExtractor(backbone)
    with caplog.at_level(logging.WARNING, logger="imgclass"):
        rebuilt, hit = split_features(ds, key, tmp_path, extract)
    assert not hit and extract.images == 8
    assert "embedding cache not usable" in caplog.text and str(array_path) in caplog.text
    np.testing.assert_array_equal(rebuilt, good)
    assert load_cached(tmp_path, key) is not None  # written again, sound


def run_train(tmp_path, digits_dir, capsys, *sets: str) -> dict:
    args = ["-q", "train", "--data", str(digits_dir), "--model", MODEL, "--out", str(tmp_path)]
    for s in ("pretrained=false", "num_threads=1", "batch_size=64", *sets):
        args += ["--set", s]
    assert main([*args, "--no-track", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cached_head_fit_writes_the_whole_model_and_reuses_its_cache(
    tmp_path, digits_dir, capsys, caplog
):
    with caplog.at_level(logging.INFO, logger="imgclass"):
        result = run_train(tmp_path, digits_dir, capsys, "epochs=3", "frozen_epochs=3")
    assert "embeddings of 273 train images x 2 view(s)" in caplog.text  # the default: 2
    assert "embeddings of 27 valid images x 1 view(s)" in caplog.text
    assert len(list((tmp_path / "cache").glob("embeddings-*.npy"))) == 2
    bundle = load_bundle(tmp_path / "bundle")
    assert [h["epoch"] for h in bundle.metrics["history"]] == [1, 2, 3]
    with np.load(tmp_path / "bundle" / "weights.npz") as weights:
        names = set(weights.files)
    assert any(n.startswith("backbone.") for n in names) and "head.1.weight" in names
    with PreparedDataset.open(digits_dir) as ds:
        images, labels = ds.load("test")
    proba = bundle.predict_proba(images)  # what the server runs
    assert proba.shape == (300, 10) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert bundle.metrics["test"]["accuracy"] == pytest.approx(
        float((proba.argmax(1) == labels).mean())
    )

    caplog.clear()
    (tmp_path / "cache").joinpath("unrelated.txt").write_text("left alone")
    with caplog.at_level(logging.INFO, logger="imgclass"):
        again = run_train(tmp_path, digits_dir, capsys, "epochs=3", "frozen_epochs=3")
    assert "embeddings of 273 train images from the cache" in caplog.text
    assert again["test"]["accuracy"] == result["test"]["accuracy"]  # the same run again


def test_fine_tuning_follows_the_cached_head_when_epochs_remain(
    tmp_path, digits_dir, capsys, caplog
):
    with caplog.at_level(logging.INFO, logger="imgclass"):  # the last epoch's weights kept
        run_train(tmp_path, digits_dir, capsys, "epochs=3", "frozen_epochs=2", "restore_best=false")
    assert "fine-tuning every weight for 1 epoch(s)" in caplog.text
    history = load_bundle(tmp_path / "bundle").metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    torch.manual_seed(0)  # the weights training started from
    start = create_model(MODEL, 10, **ARGS)
    with np.load(tmp_path / "bundle" / "weights.npz") as weights:
        trained = weights["backbone._conv_stem.weight"]
    assert not np.allclose(trained, start.backbone._conv_stem.weight.detach().numpy())
