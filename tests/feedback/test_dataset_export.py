"""Exporting feedback as a prepared dataset: the samples are exactly what the server feeds
the model, classes and splits are stable, and output is all or nothing."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgclass.cli import main
from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError, DatasetError, FeedbackError
from imgclass.feedback import dataset_export as export_module
from imgclass.feedback.dataset_export import export_feedback, split_of
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings


def drawing(k: int) -> list:
    """A raw canvas drawing (x, y, t per stroke), different for each k."""
    return [
        [[20 + k, 140, 250 - k], [30, 200 - k, 60 + 2 * k], [0, 40, 80]],
        [[60, 180 + k], [150 + k, 150], [120, 160]],
    ]


def photo(k: int) -> bytes:
    """A PNG of a dark blob on light paper, different for each k."""
    img = np.full((90, 120, 3), 235, np.uint8)
    img[20 + k : 60 + k, 30:80] = (20, 30, 40)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def served_input(client: TestClient, body: dict) -> np.ndarray:
    r = client.post("/v1/predict?include_input=true", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json()["input"], dtype=np.uint8)


@pytest.mark.parametrize("bundle_name", ["sketch_bundle", "mnist_bundle"])
def test_exported_samples_are_what_the_server_feeds_the_model(
    bundle_name, request, store, tmp_path
):
    bundle = request.getfixturevalue(bundle_name)
    labels = json.loads((bundle / "labels.json").read_text())
    inputs = [{"strokes": drawing(k)} for k in range(6)]
    inputs += [{"image_base64": base64.b64encode(photo(k)).decode()} for k in range(4)]
    for k, body in enumerate(inputs):
        strokes, image = body.get("strokes"), body.get("image_base64")
        store.add(
            label=labels[k % len(labels)],
            input_kind="strokes" if strokes else "image",
            strokes=strokes,
            image=base64.b64decode(image) if image else None,
        )
    store.set_status(range(1, 11), "accepted")
    out = export_feedback(store, tmp_path / "out", bundle=bundle, test_fraction=0.3)
    ds = PreparedDataset.open(out)
    assert ds.classes == labels and not ds.has_strokes  # images among them: no strokes kept
    assert ds.recipe == json.loads((bundle / "preprocess.json").read_text())["recipe"]
    ids = ds.manifest["feedback"]["ids"]
    assert sorted(ids["train"] + ids["test"]) == list(range(1, 11))
    settings = ServeSettings(models=[str(bundle)], feedback_db=tmp_path / "serve.sqlite3")
    with TestClient(create_app(settings)) as client:
        for split in ("train", "test"):
            images, codes = ds.load(split) if ids[split] else ([], [])
            for i, fid in enumerate(ids[split]):
                np.testing.assert_array_equal(images[i], served_input(client, inputs[fid - 1]))
                assert ds.classes[codes[i]] == labels[(fid - 1) % len(labels)]
    ds.close()


def test_strokes_are_kept_and_new_labels_follow_the_bundles(store, sketch_bundle, tmp_path):
    added = []
    for k, label in enumerate(["dog", "owl", "cat", "bee", "owl", "sun"]):
        added.append(store.add(label=label, input_kind="strokes", strokes=drawing(k))[0])
    store.set_status(added, "accepted")
    out = export_feedback(store, tmp_path / "out", bundle=sketch_bundle, test_fraction=0.5)
    ds = PreparedDataset.open(out)
    assert ds.classes == ["cat", "dog", "sun", "owl", "bee"]
    assert ds.manifest["feedback"]["new_classes"] == ["owl", "bee"]
    assert ds.has_strokes and ds.manifest["stroke_kind"] == "raw"
    for split in ds.splits:
        for i, fid in enumerate(ds.manifest["feedback"]["ids"][split]):
            kept = ds.strokes(split, i)
            sent = drawing(added.index(fid))
            for stroke, given in zip(kept, sent, strict=True):
                np.testing.assert_array_equal(stroke, np.asarray(given, np.float32).T)
    counts = ds.manifest["counts"]
    assert counts["train"] + counts["test"] == 6 and counts["valid"] == 0
    ds.close()


def test_each_submission_keeps_its_split_as_feedback_grows(store, sketch_bundle, tmp_path):
    ids = [store.add(label="cat", input_kind="strokes", strokes=drawing(k))[0] for k in range(20)]
    store.set_status(ids[:10], "accepted")
    first = export_feedback(store, tmp_path / "a", bundle=sketch_bundle)
    store.set_status(ids[10:], "accepted")
    second = export_feedback(store, tmp_path / "b", bundle=sketch_bundle)
    before = json.loads((first / "manifest.json").read_text())["feedback"]["ids"]
    after = json.loads((second / "manifest.json").read_text())["feedback"]["ids"]
    for split in ("train", "test"):
        assert set(before[split]) <= set(after[split])
    assert after["test"], "20 submissions at 20% should put some in test"
    hashes = {i.id: i.content_hash for i in store.iter_inputs()}
    assert all(split_of(hashes[i], 0.2) == "test" for i in after["test"])
    other_seed = export_feedback(store, tmp_path / "c", bundle=sketch_bundle, seed=7)
    assert json.loads((other_seed / "manifest.json").read_text())["feedback"]["ids"] != after


def test_nothing_to_export_is_a_clear_error_and_writes_nothing(store, sketch_bundle, tmp_path):
    store.add(label="cat", input_kind="strokes", strokes=drawing(0))  # new, not accepted
    with pytest.raises(FeedbackError, match="no accepted feedback to export"):
        export_feedback(store, tmp_path / "out", bundle=sketch_bundle)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_output_is_all_or_nothing(store, sketch_bundle, tmp_path, monkeypatch):
    ids = [store.add(label="cat", input_kind="strokes", strokes=drawing(k))[0] for k in range(5)]
    store.set_status(ids, "accepted")
    out = export_feedback(store, tmp_path / "out", bundle=sketch_bundle)
    with pytest.raises(DatasetError, match="already exists"):
        export_feedback(store, out, bundle=sketch_bundle)
    real = export_module.feedback_image
    calls = []

    def interrupted(item, recipe, size):
        calls.append(item.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(item, recipe, size)

    monkeypatch.setattr(export_module, "feedback_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_feedback(store, out, bundle=sketch_bundle, overwrite=True)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["train"] + counts["test"] == 5  # the previous export is intact
    assert not list(tmp_path.glob(".out*"))  # and no half-written folder is left


def test_an_unreadable_image_is_skipped_and_named(store, mnist_bundle, tmp_path):
    good = store.add(label="3", input_kind="image", image=photo(0))[0]
    bad = store.add(label="4", input_kind="image", image=b"not an image")[0]
    store.set_status([good, bad], "accepted")
    out = export_feedback(store, tmp_path / "out", bundle=mnist_bundle)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 1
    assert manifest["skipped"] and manifest["skipped"][0].startswith(f"feedback {bad}:")


def test_cli_export(store, sketch_bundle, tmp_path, capsys):
    ids = [store.add(label="cat", input_kind="strokes", strokes=drawing(k))[0] for k in range(4)]
    store.set_status(ids, "accepted")
    db = str(tmp_path / "fb.sqlite3")
    out = tmp_path / "exported"
    args = ["-q", "feedback", "export", "--db", db, "--out", str(out), "--bundle",
            str(sketch_bundle), "--json"]  # fmt: skip
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["train"] + data["counts"]["test"] == 4 and data["has_strokes"]
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main([*args, "--status", "rejected", "--overwrite"]) == 2
    assert "no rejected feedback to export" in capsys.readouterr().err
    ds = PreparedDataset.open(out)
    assert ds.size("train") + ds.size("test") == 4
    ds.close()


def add_game_and_page(store, labels, n_game=8, n_page=4):
    """Accepted submissions: ``n_game`` game rounds and ``n_page`` page corrections."""
    for k in range(n_game):
        word = labels[k % len(labels)]
        store.add(label=word, input_kind="strokes", strokes=drawing(k), source="game",
                  prompt=word, recognized=k % 2 == 0)  # fmt: skip
    for k in range(n_page):
        store.add(label=labels[k % len(labels)], input_kind="strokes",
                  strokes=drawing(50 + k), source="page")  # fmt: skip
    store.set_status(range(1, n_game + n_page + 1), "accepted")


def sources_of(ds, split):
    return ds.manifest["feedback"]["examples_per_source"][split]


@pytest.mark.parametrize(
    ("weight", "game_train"),
    [(1.0, 1), (2.0, 2), (0.0, 0)],
)
def test_the_game_weight_repeats_or_leaves_out_game_rounds_in_training(
    store, sketch_bundle, tmp_path, weight, game_train
):
    labels = json.loads((sketch_bundle / "labels.json").read_text())
    add_game_and_page(store, labels)
    base = export_feedback(store, tmp_path / "base", bundle=sketch_bundle, test_fraction=0.25)
    weighted = export_feedback(
        store, tmp_path / "w", bundle=sketch_bundle, test_fraction=0.25,
        weights=export_module.SourceWeights(game_weight=weight),
    )  # fmt: skip
    with PreparedDataset.open(base) as b, PreparedDataset.open(weighted) as w:
        assert w.manifest["feedback"]["game_weight"] == weight
        assert sources_of(w, "train").get("game", 0) == game_train * sources_of(b, "train")["game"]
        assert sources_of(w, "train")["page"] == sources_of(b, "train")["page"]
        test_games = sources_of(b, "test").get("game", 0)
        assert sources_of(w, "test").get("game", 0) == (test_games if weight else 0)
        train_ids = w.manifest["feedback"]["ids"]["train"]
        assert len(train_ids) == w.size("train")  # one id per example, repeats included


def test_half_a_weight_keeps_the_same_half_of_the_game_rounds(store, sketch_bundle, tmp_path):
    labels = json.loads((sketch_bundle / "labels.json").read_text())
    add_game_and_page(store, labels, n_game=40, n_page=2)
    half = export_module.SourceWeights(game_weight=0.5)
    runs = [
        export_feedback(
            store, tmp_path / f"h{k}", bundle=sketch_bundle, test_fraction=0.0, weights=half
        )  # fmt: skip
        for k in range(2)
    ]
    with PreparedDataset.open(runs[0]) as a, PreparedDataset.open(runs[1]) as b:
        assert a.manifest["feedback"]["ids"] == b.manifest["feedback"]["ids"]
        assert 10 <= sources_of(a, "train")["game"] <= 30


def test_sources_choose_what_is_exported(store, sketch_bundle, tmp_path, capsys):
    labels = json.loads((sketch_bundle / "labels.json").read_text())
    add_game_and_page(store, labels)
    only = export_module.SourceWeights(sources=("game",))
    out = export_feedback(store, tmp_path / "g", bundle=sketch_bundle, weights=only)
    with PreparedDataset.open(out) as ds:
        assert set(sources_of(ds, "train")) | set(sources_of(ds, "test")) == {"game"}
    with pytest.raises(FeedbackError, match="no accepted feedback from api"):
        export_feedback(store, tmp_path / "a", bundle=sketch_bundle,
                        weights=export_module.SourceWeights(sources=("api",)))  # fmt: skip
    argv = ["feedback", "export", "--db", str(store.url.database), "--bundle", str(sketch_bundle),
            "--out", str(tmp_path / "cli"), "--game-weight", "3", "--json"]  # fmt: skip
    assert main(argv) == 0
    with PreparedDataset.open(tmp_path / "cli") as ds:
        assert ds.manifest["feedback"]["game_weight"] == 3.0
    bad = ["feedback", "export", "--db", str(store.url.database), "--bundle", str(sketch_bundle),
           "--out", str(tmp_path / "bad"), "--source", "bots"]  # fmt: skip
    capsys.readouterr()
    assert main(bad) == 2
    assert "bots" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_retrain_takes_the_source_options_from_the_command_line_and_the_api():
    import argparse

    from imgclass.cli.retrain import options_from, register
    from imgclass.serve.schemas import RetrainRequest

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["retrain", "--registry", "doodles", "--game-weight", "0.5", "--source", "game,page"]
    )
    options = options_from(args)
    assert options.weights == export_module.SourceWeights(("game", "page"), 0.5)
    assert RetrainRequest(game_weight=2).arguments() == ["--game-weight", "2.0"]
    bad = parser.parse_args(["retrain", "--registry", "d", "--game-weight", "-1"])
    with pytest.raises(ConfigError, match="game weight"):
        options_from(bad)
