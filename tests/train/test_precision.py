"""The GPU path's settings, exercised on CPU where torch allows it: bf16 and fp16
autocast (fp16 with loss scaling), channels-last models and batches, and the automatic
choices (which keep the CPU path exactly as it was). The CUDA-only parts (pinned memory,
NCCL) are checked by bench/gpu_check.sh on a machine with a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imgclass.cli import main
from imgclass.models import create_model
from imgclass.train.batches import ArrayBatches, prefetch, to_device
from imgclass.train.config import resolve_config
from imgclass.train.precision import Precision, autocast_dtype, wants_channels_last
from imgclass.train.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_keeps_the_cpu_path_plain():
    model = create_model("cnn-small", 10)
    amp = Precision.for_run("auto", "auto", CPU, model)
    assert (amp.dtype, amp.channels_last, amp.scaler, amp.name) == (None, False, None, "fp32")


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_picks_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert autocast_dtype("auto", CUDA) is expected
    assert autocast_dtype("fp32", CUDA) is None


def test_channels_last_auto_for_convolutional_models_on_cuda_only():
    cnn, rnn = create_model("cnn-small", 10), create_model("stroke-rnn", 10)
    assert wants_channels_last("auto", CUDA, cnn) is True
    assert wants_channels_last("auto", CPU, cnn) is False
    assert wants_channels_last("auto", CUDA, rnn) is False
    assert wants_channels_last("on", CPU, cnn) is True
    assert wants_channels_last("on", CPU, rnn) is False  # nothing to lay out
    assert wants_channels_last("off", CUDA, cnn) is False


def test_channels_last_batches_hold_the_same_values():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 28, 28), np.uint8))
    (plain,) = to_device((images,), CPU)
    (nhwc,) = to_device((images,), CPU, channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, nhwc)


def fit_one_epoch(mnist_small, *sets):
    x, y, xv, yv = mnist_small
    cfg = resolve_config("cnn-small", sets=["epochs=1", "num_threads=1", *sets])
    torch.manual_seed(0)
    model = create_model("cnn-small", 10)
    seen: list[bool] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def during(_epoch, _row):
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last))

    trainer = Trainer(model, cfg, callbacks=[during])
    result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    return trainer, model, result, seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_trains_float32_weights(mnist_small, precision):
    trainer, model, result, _ = fit_one_epoch(mnist_small, f"precision={precision}")
    assert trainer.amp.name == precision
    assert (trainer.amp.scaler is not None) == (precision == "fp16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    row = result.history[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert row["val_accuracy"] > 0.3  # learning, not just running (10 classes: 0.1 by chance)


def test_channels_last_on_cpu_trains_in_nhwc_and_hands_back_a_plain_model(mnist_small):
    trainer, model, result, seen = fit_one_epoch(mnist_small, "channels_last=on")
    assert trainer.amp.channels_last and seen == [True]
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # export and weights.npz see the usual layout
    assert result.history[0]["val_accuracy"] > 0.3


def test_cli_precision_and_layout_reach_the_bundle(tmp_path, digits_dir, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(digits_dir), "--out", str(out), "--model", "cnn-small",
                 "--epochs", "1", "--precision", "bf16", "--channels-last", "on",
                 "--set", "num_threads=1", "--no-track", "--json"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["precision"] == "bf16" and printed["channels_last"] is True
    assert main(["evaluate", str(out / "bundle"), "--data", str(digits_dir), "--json"]) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_batches_come_pinned_for_a_gpu():
    batches = ArrayBatches((np.zeros((8, 28, 28), np.uint8),), np.zeros(8, np.int64))
    (images,), labels = next(prefetch(batches.epoch(4), 1, pin=True))
    assert images.is_pinned() and labels.is_pinned()
