"""Quick, Draw! ndjson: simplified and raw strokes, plain or gzipped, any number of words."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError


def _line(word="cat", drawing=None, key="1", **extra):
    record = {
        "word": word,
        "countrycode": "US",
        "timestamp": "2017-03-01 00:00:00.00000 UTC",
        "recognized": True,
        "key_id": key,
        "drawing": drawing if drawing is not None else [[[0, 255], [0, 100]]],
    }
    record.update(extra)
    return json.dumps(record) + "\n"


def test_real_raw_file_keeps_strokes_with_their_timing(sources_dir, read_all):
    path = sources_dir / "full_raw_cat.ndjson"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert detect_format(path) == "quickdraw-ndjson"
    chunks, labels = read_all(open_source(path), 2)
    assert labels == ["cat"] * 3 and [len(c) for c in chunks] == [2, 1]
    assert all(c.stroke_kind == "raw" and c.images is None for c in chunks)
    assert [i for c in chunks for i in c.ids] == [r["key_id"] for r in records]
    drawings = [d for c in chunks for d in c.strokes]
    for drawing, record in zip(drawings, records, strict=True):
        assert len(drawing) == len(record["drawing"])
        for stroke, (xs, ys, ts) in zip(drawing, record["drawing"], strict=True):
            assert stroke.dtype == np.float32 and stroke.shape == (len(xs), 3)
            np.testing.assert_allclose(stroke, np.array([xs, ys, ts], np.float32).T)
    assert chunks[0].meta["recognized"] == [r["recognized"] for r in records[:2]]
    assert chunks[0].meta["countrycode"] == [r["countrycode"] for r in records[:2]]


def test_many_words_in_one_gzipped_file(tmp_path, raw_lines, read_all):
    path = tmp_path / "sample.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(raw_lines)))
    words = [json.loads(line)["word"] for line in raw_lines]
    _, labels = read_all(open_source(path), 7)
    assert labels == words and len(set(words)) > 1
    first, second = words[0], next(w for w in words if w != words[0])
    _, labels = read_all(open_source(path, categories=[second], per_class=3))
    assert labels == [second] * 3
    _, labels = read_all(open_source(path, per_class=2))
    assert labels.count(first) == 2 and set(labels) == set(words)


def test_gzip_is_recognised_by_its_bytes_whatever_the_name(tmp_path, sources_dir, read_all):
    path = tmp_path / "full_raw_cat.ndjson"  # gzipped data under a plain name
    path.write_bytes(gzip.compress((sources_dir / "full_raw_cat.ndjson").read_bytes()))
    assert read_all(open_source(path))[1] == ["cat"] * 3


def test_simplified_strokes_by_hand(tmp_path, read_all):
    path = tmp_path / "full_simplified_cat.ndjson"
    drawing = [[[0, 100, 255], [0, 50, 80]], [[10, 10.5], [200, 255]]]
    path.write_text(_line("cat", drawing, "11") + "\n" + _line("cat", drawing, "12"))
    chunks, labels = read_all(open_source(path))
    assert labels == ["cat", "cat"] and chunks[0].ids == ["11", "12"]
    assert chunks[0].stroke_kind == "simplified"
    first = chunks[0].strokes[0]
    np.testing.assert_array_equal(first[0], [[0, 0], [100, 50], [255, 80]])
    np.testing.assert_array_equal(first[1], [[10, 200], [10.5, 255]])


def test_label_option_overrides_word_and_missing_key_id_gives_the_line(tmp_path, read_all):
    path = tmp_path / "drawings.ndjson"
    path.write_text(json.dumps({"drawing": [[[1, 2], [3, 4]]]}) + "\n")
    chunks, labels = read_all(open_source(path, label="house"))
    assert labels == ["house"] and chunks[0].ids == ["1"]
    with pytest.raises(DataFormatError, match="line 1: no 'word'"):
        read_all(open_source(path))


def test_reading_stops_once_every_wanted_class_is_full(tmp_path, read_all):
    # The broken last line is never reached: 2 cats were wanted and found first.
    path = tmp_path / "cat.ndjson"
    path.write_text(_line() + _line("dog") + _line() + "{broken\n")
    assert read_all(open_source(path, categories=["cat"], per_class=2))[1] == ["cat", "cat"]
    with pytest.raises(DataFormatError, match="line 4"):
        read_all(open_source(path))


def test_a_source_can_be_read_twice(tmp_path, read_all):
    path = tmp_path / "cat.ndjson"
    path.write_text(_line() * 4)
    source = open_source(path, per_class=3)
    assert read_all(source)[1] == read_all(source)[1] == ["cat"] * 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json\n", "not valid JSON"),
        ("[1, 2]\n", "expected a JSON object"),
        (json.dumps({"word": "cat"}) + "\n", "no 'drawing'"),
        (_line(drawing=[]), "drawing: must be a non-empty list of strokes"),
        (_line(drawing=[[[], []]]), r"drawing\[0\]: x, y .* non-empty lists of equal length"),
        (_line(drawing=[[[0, 1], [0, 1]], [[1, 2, 3], [1, 2]]]), r"drawing\[1\]: x, y"),
        (_line(drawing=[[[1, 2], [1, 2], [0]]]), r"drawing\[0\]: x, y"),
        (_line(drawing=[[[1, 2]]]), r"drawing\[0\]: must be \[\[x...\], \[y...\]\]"),
        (_line(drawing=[[[1, "a"], [1, 2]]]), r"drawing\[0\]\[0\]\[1\]: must be a number, not a"),
        (_line(drawing=[[["1", "2"], [1, 2]]]), r"drawing\[0\]\[0\]\[0\]: must be a number"),
        (_line(drawing=[[[True, False], [False, True]]]), r"drawing\[0\]\[0\]\[0\]: must be a"),
        (_line(drawing=[[[1, True], [0, 1]]]), r"drawing\[0\]\[0\]\[1\]: must be a number, not"),
        (_line(drawing=[[[None, 1], [1, 2]]]), r"drawing\[0\]\[0\]\[0\]: must be a number"),
        (_line(drawing=[[[[1], 2], [1, 2]]]), r"drawing\[0\]\[0\]\[0\]: must be a number"),
        (
            '{"word": "cat", "drawing": [[[NaN, 1], [1, 2]]]}\n',
            r"drawing\[0\]\[0\]\[0\]: must be a finite number",
        ),
        (
            _line(drawing=[[[1, 2], [1, 2]], [[1], [1], [0]]]),
            r"drawing\[1\]: strokes mix \[x, y\] and \[x, y, t\]",
        ),
        (_line(drawing=[[[1, 2], [1, 2], [0, 5]]]), "a raw drawing in a file of simplified"),
    ],
)
def test_bad_lines_are_named_with_file_and_line_number(tmp_path, line, message):
    path = tmp_path / "full_simplified_cat.ndjson"
    path.write_text(_line() + "\n" + line)  # the bad record is on line 3
    with pytest.raises(DataFormatError, match=rf"full_simplified_cat\.ndjson, line 3: {message}"):
        list(open_source(path).iter_chunks())


def test_non_utf8_line_is_named(tmp_path):
    path = tmp_path / "cat.ndjson"
    path.write_bytes(_line().encode() + b'{"word": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"cat\.ndjson, line 2: not UTF-8 text"):
        list(open_source(path).iter_chunks())


def test_corrupt_gzip_is_named(tmp_path, raw_lines):
    data = gzip.compress(b"".join(raw_lines))
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.ndjson\.gz, after line \d+: corrupt gzip"):
        list(open_source(cut).iter_chunks())
    damaged = tmp_path / "damaged.ndjson.gz"
    damaged.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:])
    with pytest.raises(DataFormatError, match=r"damaged\.ndjson\.gz.*corrupt gzip"):
        list(open_source(damaged).iter_chunks())
    not_gzip = tmp_path / "plain.ndjson.gz"
    not_gzip.write_bytes(b"".join(raw_lines[:2]))
    with pytest.raises(DataFormatError, match=r"plain\.ndjson\.gz, after line 0: corrupt gzip"):
        list(open_source(not_gzip).iter_chunks())
