"""stroke-rnn: padding never counts, checked against each sequence run alone, and the
ONNX graph agrees with torch on real Quick, Draw! strokes of any padded length."""

from __future__ import annotations

import gzip
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imgclass.errors import ConfigError
from imgclass.models import create_model
from imgclass.onnx_export import export_torch_sequence

torch.set_num_threads(1)

VARIANTS = [
    {"cell": "gru", "pooling": "mean"},
    {"cell": "lstm", "pooling": "last"},
    {"cell": "gru", "pooling": "last", "bidirectional": False, "conv": False},
    {"cell": "lstm", "pooling": "mean", "bidirectional": False, "layers": 1},
]


def small(classes: int = 4, **cfg):
    torch.manual_seed(0)
    return create_model("stroke-rnn", classes, hidden=16, **cfg).eval()


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: "-".join(map(str, c.values())))
def test_each_sequence_alone_gives_what_the_padded_batch_gives(cfg):
    # The reference: a sequence run on its own, trimmed to its length, sees no padding at all.
    model = small(**cfg)
    x = torch.randn(4, 25, 5)
    lengths = torch.tensor([25, 1, 9, 16])
    with torch.no_grad():
        batch = model(x, lengths)
        alone = torch.cat(
            [model(x[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths)]
        )
        garbage = torch.cat([x, 100 * torch.randn(4, 7, 5)], dim=1)  # padding of any value
        padded = model(garbage, lengths)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded, batch, atol=1e-5, rtol=1e-4)


def test_last_pooling_is_each_direction_final_state():
    model = small(cell="gru", pooling="last", conv=False, layers=1)
    x = torch.randn(2, 10, 5)
    lengths = torch.tensor([10, 6])
    with torch.no_grad():
        out = model(x, lengths)
        for i, n in enumerate(lengths):
            seq = x[i : i + 1, :n]
            forward_state = model.forward_rnn(seq)[1][-1]  # h_n: after the last real step
            backward_state = model.backward_rnn(seq.flip(1))[1][-1]  # after the first one
            reference = model.head(torch.cat([forward_state, backward_state], dim=1))
            torch.testing.assert_close(out[i : i + 1], reference)


@pytest.fixture(scope="module")
def real_sequences(shared_data):
    """Stroke-5 sequences of 12 real raw drawings, padded to 120 steps."""
    from imgclass.data.sequences import encode_drawings

    path = shared_data / "quickdraw_strokes_raw.ndjson.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(next(f)) for _ in range(12)]
    drawings = [[np.asarray(s, dtype=np.float32).T for s in r["drawing"]] for r in rows]
    seqs, lengths = encode_drawings(drawings, "stroke5", 120, raw=True)
    assert len(set(lengths.tolist())) > 3  # lengths really differ
    return seqs.astype(np.float32), lengths.astype(np.int64)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_onnx_matches_torch_on_real_strokes_for_two_lengths(cell, real_sequences):
    seqs, lengths = real_sequences
    model = small(6, cell=cell)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(seqs), torch.from_numpy(lengths)), 1)
    session = ort.InferenceSession(export_torch_sequence(model, seqs, lengths))
    short = int(lengths.max())
    for steps in (short, 120):  # trimmed to the longest drawing, and padded further
        for batch in (1, 12):
            feed = {"input": seqs[:batch, :steps], "lengths": lengths[:batch]}
            got = session.run(["probabilities"], feed)[0]
            np.testing.assert_allclose(got, expected[:batch].numpy(), rtol=1e-4, atol=1e-5)


def test_stroke3_input_and_bad_settings():
    model = small(features=3)
    assert model(torch.randn(2, 8, 3), torch.tensor([8, 4])).shape == (2, 4)
    with pytest.raises(ConfigError, match="cell must be"):
        create_model("stroke-rnn", 3, cell="rnn")
    with pytest.raises(ConfigError, match="pooling must be"):
        create_model("stroke-rnn", 3, pooling="max")
