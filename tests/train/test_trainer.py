"""The torch trainer on real MNIST digits: repeatable under a seed, resumable exactly,
early stopping that restores the best weights, two-phase transfer training, schedules,
and the batch sources it reads."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from imgclass.errors import ModelError
from imgclass.models import create_model
from imgclass.train.batches import (
    ArrayBatches,
    StoreBatches,
    batch_bounds,
    shard,
    stratified_holdout,
)
from imgclass.train.config import resolve_config
from imgclass.train.optim import warmup_cosine
from imgclass.train.trainer import Trainer


class Stop(Exception):
    """Stands for the process being killed."""


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def fit(cfg, data, checkpoints=None, resume=False, callbacks=(), model_seed=0):
    x, y, xv, yv = data
    torch.manual_seed(model_seed)
    model = create_model(cfg.model, 10, **cfg.model_args)
    trainer = Trainer(model, cfg, checkpoint_dir=checkpoints, callbacks=callbacks)
    result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv), resume=resume)
    return model, result


# A small ResNet with batch norm, dropout, affine augmentation and one-cycle: every
# source of randomness and state the trainer has to get right.
RESNET = ["width=8", "epochs=3", "num_threads=1", "augment=affine", "dropout=0.2", "seed=5"]


def test_same_seed_same_weights_other_seed_other_weights(mnist_small):
    cfg = resolve_config("cnn-resnet", sets=[*RESNET, "epochs=2"])
    a, ra = fit(cfg, mnist_small)
    b, rb = fit(cfg, mnist_small)
    assert_same_weights(weights(a), weights(b))
    assert [r["train_loss"] for r in ra.history] == [r["train_loss"] for r in rb.history]
    other = resolve_config("cnn-resnet", sets=[*RESNET, "epochs=2", "seed=6"])
    c, _ = fit(other, mnist_small)
    assert not torch.equal(weights(a)["head.3.weight"], weights(c)["head.3.weight"])


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, mnist_small):
    cfg = resolve_config("cnn-resnet", sets=[*RESNET, "restore_best=false"])
    whole, whole_result = fit(cfg, mnist_small, tmp_path / "whole")

    def kill_after_first(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, mnist_small, tmp_path / "killed", callbacks=[kill_after_first])
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert {"model", "optimizer", "scheduler", "rng", "best", "config"} <= set(saved)
    # A different initialisation proves the weights come from the checkpoint.
    resumed, result = fit(cfg, mnist_small, tmp_path / "killed", resume=True, model_seed=9)
    assert_same_weights(weights(whole), weights(resumed))
    timeless = [
        {k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")}
        for r in result.history
    ]
    assert timeless == [
        {k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")}
        for r in whole_result.history
    ]


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, mnist_small):
    cfg = resolve_config("cnn-small", sets=["epochs=1", "num_threads=1"])
    fit(cfg, mnist_small, tmp_path)
    other = resolve_config("cnn-3conv", sets=["epochs=2", "num_threads=1"])
    with pytest.raises(ModelError, match="checkpoint is of cnn-small, not cnn-3conv"):
        fit(other, mnist_small, tmp_path, resume=True)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the checkpoint"):
        fit(cfg, mnist_small, tmp_path, resume=True)


def test_early_stopping_restores_the_best_weights(mnist_small):
    # min_delta 2 on val_accuracy: nothing after epoch 1 can count as an improvement.
    sets = ["epochs=6", "patience=2", "monitor=val_accuracy", "min_delta=2", "num_threads=1"]
    cfg = resolve_config("cnn-small", sets=sets)
    snapshots = {}
    model_box = {}

    def snapshot(epoch, row):
        snapshots[epoch] = weights(model_box["model"])

    x, y, xv, yv = mnist_small
    torch.manual_seed(0)
    model = model_box["model"] = create_model("cnn-small", 10)
    trainer = Trainer(model, cfg, callbacks=[snapshot])
    result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    assert_same_weights(weights(model), snapshots[1])
    assert not torch.equal(snapshots[1]["head.2.weight"], snapshots[3]["head.2.weight"])
    loss, accuracy = trainer.evaluate(ArrayBatches((xv,), yv))
    assert accuracy == result.history[0]["val_accuracy"]
    assert loss == pytest.approx(result.history[0]["val_loss"], rel=1e-6)


def test_best_epoch_by_validation_loss_and_monitor_fallback(mnist_small):
    cfg = resolve_config("cnn-small", sets=["epochs=3", "num_threads=1", "lr=0.3", "optimizer=sgd"])
    _, result = fit(cfg, mnist_small)
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    x, y, _, _ = mnist_small
    model = create_model("cnn-small", 10)
    no_valid = Trainer(model, resolve_config("cnn-small", sets=["epochs=1", "num_threads=1"]))
    assert no_valid.fit(ArrayBatches((x,), y)).monitor == "train_loss"


class TinyTransfer(nn.Module):
    """Stands for a transfer model: a 'backbone' that can be frozen and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def freeze_backbone(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def unfreeze(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(True)


def test_transfer_models_train_in_two_phases(mnist_small):
    sets = ["epochs=3", "frozen_epochs=2", "lr=0.01", "unfreeze_lr_factor=0.1", "schedule=none"]
    cfg = resolve_config("cnn-small", sets=[*sets, "num_threads=1"])
    x, y, xv, yv = mnist_small
    model = TinyTransfer()
    start = weights(model)
    seen = {}
    trainer = Trainer(
        model, cfg, callbacks=[lambda epoch, row: seen.setdefault(epoch, weights(model))]
    )
    result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    assert torch.equal(seen[2]["backbone.1.weight"], start["backbone.1.weight"])  # frozen
    assert not torch.equal(seen[2]["head.weight"], start["head.weight"])
    assert not torch.equal(seen[3]["backbone.1.weight"], start["backbone.1.weight"])
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.01, 0.001])


def test_warmup_then_cosine_factors():
    factor = warmup_cosine(warmup_steps=4, total_steps=14, cosine=True)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(14) == pytest.approx(0.0, abs=1e-12)
    constant = warmup_cosine(warmup_steps=0, total_steps=10, cosine=False)
    assert {constant(s) for s in range(10)} == {1.0}


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "plateau"])
def test_schedules_run_to_the_end(mnist_small, schedule):
    sets = ["epochs=2", "num_threads=1", f"schedule={schedule}", "label_smoothing=0.1"]
    _, result = fit(resolve_config("cnn-small", sets=sets), mnist_small)
    assert len(result.history) == 2 and all(math.isfinite(r["train_loss"]) for r in result.history)
    if schedule != "plateau":
        assert result.history[-1]["lr"] < result.history[0]["lr"]


# --- batch sources ---------------------------------------------------------------------


def test_batches_cover_the_data_once_and_shard_evenly():
    assert batch_bounds(129, 64, train=True) == [(0, 64), (64, 129)]  # no batch of one
    assert batch_bounds(129, 64, train=False) == [(0, 64), (64, 128), (128, 129)]
    order = np.arange(11)
    shards = [shard(order, r, 3, pad=True) for r in range(3)]
    assert {len(s) for s in shards} == {4}
    assert set(np.concatenate(shards)) == set(order)
    labels = np.arange(50) % 5
    source = ArrayBatches((np.arange(50, dtype=np.uint8)[:, None, None],), labels)
    for world in (1, 2, 3):
        seen = [
            int(v)
            for rank in range(world)
            for (x,), _ in source.epoch(8, seed=1, rank=rank, world=world, train=False)
            for v in x[:, 0, 0]
        ]
        assert sorted(seen) == list(range(50))
    steps = [len(list(source.epoch(8, seed=1, rank=r, world=3))) for r in range(3)]
    assert steps == [source.steps(8, 3)] * 3


def test_stratified_holdout():
    labels = np.repeat(np.arange(4), [10, 20, 2, 1])
    kept, held = stratified_holdout(labels, 0.2, seed=0)
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 4, 1, 0]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    again = stratified_holdout(labels, 0.2, seed=0)[1]
    assert np.array_equal(held, again)


def test_store_batches_stream_the_prepared_split(digits_dir):
    from imgclass.data.store import PreparedDataset

    with PreparedDataset.open(digits_dir) as ds:
        images, labels = ds.load("train")
        mask = np.ones(len(labels), bool)
        mask[::3] = False
        source = StoreBatches(ds, "train", mask)
        seen = []
        for rank in range(2):
            for (x,), y in source.epoch(32, seed=0, rank=rank, world=2, train=False):
                for img, label in zip(x.numpy(), y.numpy(), strict=True):
                    index = int(np.flatnonzero((images == img).all(axis=(1, 2)))[0])
                    assert labels[index] == label
                    seen.append(index)
        assert sorted(seen) == np.flatnonzero(mask).tolist()
        per_rank = [list(source.epoch(32, seed=3, rank=r, world=2)) for r in range(2)]
        assert [len(b) for b in per_rank] == [source.steps(32, 2)] * 2
        assert all(len(y) == 32 for b in per_rank for _, y in b)


def test_training_streamed_from_the_store_in_a_background_thread(digits_dir):
    from imgclass.data.store import PreparedDataset

    cfg = resolve_config("cnn-small", sets=["epochs=2", "num_threads=1", "batch_size=32"])
    with PreparedDataset.open(digits_dir) as ds:
        source = StoreBatches(ds, "train")
        torch.manual_seed(0)
        trainer = Trainer(create_model("cnn-small", 10), cfg)
        assert trainer._workers(source) == 2  # streamed: loaded ahead
        result = trainer.fit(source, StoreBatches(ds, "valid"))
    assert trainer.samples_seen == 2 * (273 // 32) * 32  # full batches only
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_prefetch_hands_over_errors_and_stops_early():
    from imgclass.train.batches import prefetch

    def broken():
        yield 1
        raise ValueError("bad chunk")

    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in prefetch(broken(), depth=2):
            got.append(item)
    assert got == [1]
    endless = prefetch(iter(range(10**9)), depth=2)
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()  # the producer thread stops instead of filling memory


def test_prefetch_thread_leaves_the_cores_to_the_training_step():
    """The producer thread must not start a second OpenMP pool as wide as the training
    step's: on 2 cores that pool's busy-waiting workers halved the step's speed."""
    from imgclass.train.batches import prefetch

    def producer():
        for _ in range(3):
            yield torch.get_num_threads()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert list(prefetch(producer(), depth=2)) == [1, 1, 1]
        assert torch.get_num_threads() == 2  # the caller's own setting is untouched
    finally:
        torch.set_num_threads(before)


# A whole training run in a new process, as ``imgclass train`` runs: its training
# thread has not used torch's thread pool before fit starts the prefetch thread.
FRESH_FIT = """
import numpy as np, torch
from imgclass.models import create_model
from imgclass.train.batches import ArrayBatches
from imgclass.train.config import resolve_config
from imgclass.train.trainer import Trainer
seen = []
cfg = resolve_config("cnn-small", sets=["epochs=2", "num_threads=2", "workers=1", "batch_size=16"])
x, y = np.zeros((48, 28, 28), np.uint8), np.arange(48) % 10
trainer = Trainer(create_model("cnn-small", 10), cfg, callbacks=[lambda e, r: seen.append(torch.get_num_threads())])
trainer.fit(ArrayBatches((x,), y))
print(*seen)
"""


def test_a_fresh_process_trains_on_the_threads_it_asked_for():
    """The prefetch thread's ``set_num_threads(1)`` is process-wide in torch until a
    thread first sizes its pool: a new process's training thread sized its own from it
    and trained every epoch on one thread (``imgclass train`` on 2 cores)."""
    run = subprocess.run([sys.executable, "-c", FRESH_FIT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["2", "2"]
