"""Issue 10, data correctness of `imgclass data prepare`: every example read once and
kept in one split, training files kept out of the test split, a folder with --format,
named numbered labels, the recipe chosen and said, photo grids that show the photos.

Inputs are real MNIST digits, Quick, Draw! drawings and photos from ../shared/data,
written in the users' file formats by the tests themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclass.cli import main
from imgclass.data.store import PreparedDataset

# --- writing the inputs -------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(shared_data: Path) -> dict[str, np.ndarray]:
    with np.load(shared_data / "mnist.npz") as d:
        return {k: d[k][:600] for k in ("x_train", "y_train", "x_test", "y_test")}


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    """A gzipped IDX file: big-endian magic and dimensions, then the bytes."""
    head = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(head + array.astype(np.uint8).tobytes(), compresslevel=1))
    return path


def write_idx_set(folder: Path, x_train, y_train, x_test, y_test) -> list[Path]:
    """MNIST's four files, named as on Yann LeCun's site; returns them sorted (a glob)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train, 0x803)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y_train, 0x801)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test, 0x803)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y_test, 0x801)
    return sorted(folder.glob("*.gz"))


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    rows = np.column_stack([y, x.reshape(len(x), -1)])
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def prepare(*argv: str) -> int:
    return main(["-q", "data", "prepare", *argv])


def stored(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with PreparedDataset.open(out) as ds:
        return {s: ds.load(s) for s in ds.splits}


def digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(img.tobytes()).digest() for img in images}


# --- MNIST read twice; duplicates ------------------------------------------------------


def test_the_four_mnist_files_of_a_glob_are_read_once(tmp_path, mnist, capsys):
    """`prepare mnist/*.gz` names each IDX pair twice (images and labels file): it read
    every example twice, and copies of one training digit landed in train and valid."""
    files = write_idx_set(
        tmp_path / "mnist",
        mnist["x_train"][:500],
        mnist["y_train"][:500],
        mnist["x_test"][:100],
        mnist["y_test"][:100],
    )
    out = tmp_path / "ds"
    assert prepare(*map(str, files), "--out", str(out), "--recipe", "none") == 0
    with PreparedDataset.open(out) as ds:
        m = ds.manifest
    assert m["counts"]["test"] == 100
    assert m["counts"]["train"] + m["counts"]["valid"] == 500
    # Both files of each pair are recorded as sources, each once.
    assert sorted(Path(s["path"]).name for s in m["sources"]) == sorted(f.name for f in files)
    splits = stored(out)
    assert digests(splits["train"][0]) & digests(splits["valid"][0]) == set()
    assert digests(splits["test"][0]) == digests(mnist["x_test"][:100])


def test_the_same_file_named_twice_and_an_idx_pair_beside_its_gunzipped_copy(
    tmp_path, mnist, caplog
):
    files = write_idx_set(
        tmp_path / "m",
        mnist["x_train"][:100],
        mnist["y_train"][:100],
        mnist["x_test"][:20],
        mnist["y_test"][:20],
    )
    # The same test pair, gunzipped, beside the .gz files.
    for f in files:
        if f.name.startswith("t10k"):
            f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
    out = tmp_path / "ds"
    names = [str(p) for p in sorted((tmp_path / "m").iterdir())]
    assert prepare(*names, str(files[0]), "--out", str(out), "--recipe", "none") == 0
    with PreparedDataset.open(out) as ds:
        assert ds.manifest["counts"]["test"] == 20
        assert ds.size("train") + ds.size("valid") == 100
        assert ds.manifest["duplicates"]["dropped"] == 0  # read once, not read and dropped


def test_exact_copies_are_dropped_keeping_the_sources_own_test_copy(tmp_path, mnist, capsys):
    """Seven training digits repeat other training digits, five are copies of test
    digits, and the test file repeats one of its own: one copy of each is kept, the
    test copy where there is one, and the manifest and `data info` say so."""
    x_train, y_train = mnist["x_train"][:300].copy(), mnist["y_train"][:300].copy()
    x_test, y_test = mnist["x_test"][:100].copy(), mnist["y_test"][:100].copy()
    x_train[200:207], y_train[200:207] = x_train[:7], y_train[:7]
    x_train[250:255], y_train[250:255] = x_test[10:15], y_test[10:15]
    x_test[99], y_test[99] = x_test[0], y_test[0]
    files = write_idx_set(tmp_path / "m", x_train, y_train, x_test, y_test)
    out = tmp_path / "ds"
    assert prepare(*map(str, files), "--out", str(out), "--recipe", "none") == 0
    summary = capsys.readouterr().out
    splits = stored(out)
    assert len(splits["test"][0]) == 99  # its own digits, less the repeat of digit 0
    assert digests(splits["test"][0]) == digests(x_test)
    assert sum(len(x) for x, _ in splits.values()) == 300 - 12 + 99
    seen: set[bytes] = set()
    for x, _ in splits.values():
        assert len(digests(x)) == len(x) and not digests(x) & seen  # one copy in all
        seen |= digests(x)
    dup = json.loads((out / "manifest.json").read_text())["duplicates"]
    assert dup["dropped"] == 13 and dup["own_test_overlaps"] == 5
    assert dup["within_split"]["test"] == 1
    assert sum(dup["within_split"].values()) + sum(dup["across_splits"].values()) == 13
    assert dup["across_splits"]["train/test"] + dup["across_splits"]["valid/test"] == 5
    assert "13 exact copies dropped" in summary
    assert "5 of them copies of the sources' own test examples" in summary
    assert main(["data", "info", str(out)]) == 0
    assert "duplicates: 13 exact copies dropped" in capsys.readouterr().out
    assert main(["data", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == dup


def test_an_npz_keeps_its_own_test_copy_though_its_training_part_comes_first(tmp_path, mnist):
    x_train, y_train = mnist["x_train"][:200].copy(), mnist["y_train"][:200]
    x_train[50:53] = mnist["x_test"][:3]
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=mnist["x_test"][:40],
             y_test=mnist["y_test"][:40])  # fmt: skip
    assert prepare(str(path), "--out", str(tmp_path / "ds"), "--recipe", "none") == 0
    splits = stored(tmp_path / "ds")
    assert digests(splits["test"][0]) == digests(mnist["x_test"][:40])
    assert len(splits["train"][0]) + len(splits["valid"][0]) == 197


def test_copies_of_a_drawing_in_stroke_files_are_found_by_their_strokes(tmp_path, shared_data):
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        lines = [next(f) for _ in range(30)]
    (tmp_path / "a.ndjson").write_text("".join(lines[:20]))
    (tmp_path / "b.ndjson").write_text("".join(lines[15:30]))  # 5 drawings in both files
    out = tmp_path / "ds"
    assert prepare(str(tmp_path / "a.ndjson"), str(tmp_path / "b.ndjson"), "--out", str(out)) == 0
    with PreparedDataset.open(out) as ds:
        assert sum(ds.size(s) for s in ds.splits) == 30
        assert ds.manifest["duplicates"]["dropped"] == 5


def test_seen_keys_agree_with_a_python_set_across_many_merges():
    from imgclass.data.dedupe import SeenKeys

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2**63, size=5000, dtype=np.uint64) & ~np.uint64(7)
    index, reference = SeenKeys(), {}
    for _ in range(60):
        batch = np.unique(rng.choice(pool, size=int(rng.integers(1, 300))))
        found = index.find(batch)
        expected = [reference.get(int(k), -1) for k in batch]
        assert found.tolist() == expected
        new = batch[found < 0]
        tags = rng.integers(0, 8, size=len(new)).astype(np.int8)
        index.add(new, tags)
        reference.update(zip(map(int, new), map(int, tags), strict=True))
    assert len(index) == len(reference) and len(index.levels) < 12


def test_duplicates_within_one_chunk_and_counts_by_split():
    from imgclass.data.dedupe import Deduplicator

    d = Deduplicator()
    keys = np.array([8, 16, 8, 24, 16], dtype=np.uint64)
    keep = d.keep(keys, np.array([0, 1, 0, 2, 0], dtype=np.int8), own=False)
    assert keep.tolist() == [True, True, False, True, False]
    keep = d.keep(np.array([24, 32], dtype=np.uint64), np.array([2, 2], np.int8), own=True)
    assert keep.tolist() == [False, True]
    report = d.report()
    assert report["dropped"] == 3 and report["within_split"] == {"train": 1, "valid": 0, "test": 1}
    assert report["across_splits"]["train/valid"] == 1
    assert report["own_split_copies_dropped"] == 1


# --- CSV: a training file in the test split ------------------------------------------


def test_a_csv_training_file_never_feeds_the_test_split(tmp_path, mnist):
    """mnist_train.csv (300 rows) with mnist_test.csv (100): the test split held the 100
    test rows plus 29 training rows, because only the test file's name was looked at."""
    train = write_csv(tmp_path / "mnist_train.csv", mnist["x_train"][:300], mnist["y_train"][:300])
    test = write_csv(tmp_path / "mnist_test.csv", mnist["x_test"][:100], mnist["y_test"][:100])
    for order in ([train, test], [test, train]):
        out = tmp_path / f"ds{order[0].stem}"
        assert prepare(*map(str, order), "--out", str(out), "--recipe", "none") == 0
        splits = stored(out)
        assert digests(splits["test"][0]) == digests(mnist["x_test"][:100])
        assert len(splits["train"][0]) + len(splits["valid"][0]) == 300
    # Alone, a training file is still split three ways (there is no other test split).
    assert prepare(str(train), "--out", str(tmp_path / "alone"), "--recipe", "none") == 0
    with PreparedDataset.open(tmp_path / "alone") as ds:
        assert 25 <= ds.size("test") <= 35  # 10% of each class


def test_an_idx_training_pair_alone_is_split_three_ways(tmp_path, mnist):
    folder = tmp_path / "m"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", mnist["x_train"][:200], 0x803)
    write_idx(folder / "train-labels-idx1-ubyte.gz", mnist["y_train"][:200], 0x801)
    assert prepare(str(folder), "--out", str(tmp_path / "ds"), "--recipe", "none") == 0
    with PreparedDataset.open(tmp_path / "ds") as ds:
        assert 15 <= ds.size("test") <= 25 and 15 <= ds.size("valid") <= 25


# --- every format: a folder with --format, a pattern, a missing file -------------------


def _strokes(shared_data: Path, n: int) -> list[dict]:
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        return [json.loads(next(f)) for _ in range(n)]


def _bin_record(key: int, strokes: list[np.ndarray]) -> bytes:
    out = struct.pack("<Q2sBIH", key, b"US", 1, 0, len(strokes))
    for s in strokes:
        pts = np.clip(np.round(s[:, :2]), 0, 255).astype(np.uint8)
        out += struct.pack("<H", len(pts)) + pts[:, 0].tobytes() + pts[:, 1].tobytes()
    return out


def _stroke3(record: dict) -> np.ndarray:
    strokes = [np.array(s[:2], dtype=np.float64).T for s in record["drawing"]]
    points = np.vstack(strokes)
    lifted = np.zeros(len(points))
    lifted[np.cumsum([len(s) for s in strokes]) - 1] = 1
    deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    return np.column_stack([deltas, lifted]).astype(np.int16)


def _write_quickdraw(fmt: str, folder: Path, records: list[dict], x: np.ndarray) -> int:
    """Two classes of Quick, Draw! examples in one of its formats; returns how many."""
    from imgclass.data.render import simplify_raw

    if fmt == "quickdraw-npy":
        for k, name in enumerate(("cat", "sun")):
            np.save(
                folder / f"full_numpy_bitmap_{name}.npy", x[k * 10 : k * 10 + 10].reshape(-1, 784)
            )
        return 20
    if fmt == "quickdraw-ndjson":
        for k, name in enumerate(("a", "b")):
            lines = [json.dumps(r) for r in records[k * 10 : k * 10 + 10]]
            (folder / f"{name}.ndjson").write_text("\n".join(lines) + "\n")
        return 20
    for k, name in enumerate(("cat", "sun")):  # quickdraw-bin
        drawings = [
            simplify_raw([np.array(s).T for s in r["drawing"]])
            for r in records[k * 10 : k * 10 + 10]
        ]
        data = b"".join(_bin_record(i, d) for i, d in enumerate(drawings))
        (folder / f"full_binary_{name}.bin").write_bytes(data)
    return 20


def _write_arrays(fmt: str, folder: Path, x: np.ndarray, y: np.ndarray) -> int:
    """Real MNIST digits as IDX, CSV or plain npz files; returns how many."""
    if fmt == "mnist-idx":
        write_idx_set(folder, x[:30], y[:30], x[30:40], y[30:40])
        return 40
    if fmt == "mnist-csv":
        write_csv(folder / "mnist_train.csv", x[:30], y[:30])
        write_csv(folder / "mnist_test.csv", x[30:40], y[30:40])
        return 40
    np.savez(folder / "a.npz", x=x[:10], y=y[:10])  # npz
    np.savez(folder / "b.npz", x=x[10:20], y=y[10:20])
    return 20


def write_format(fmt: str, folder: Path, shared_data: Path, mnist: dict) -> int:
    """Two classes' worth of real examples in ``fmt`` under ``folder``; returns how many."""
    folder.mkdir(parents=True)
    x, y = mnist["x_train"], mnist["y_train"]
    records = _strokes(shared_data, 20)
    if fmt in ("quickdraw-npy", "quickdraw-ndjson", "quickdraw-bin"):
        return _write_quickdraw(fmt, folder, records, x)
    if fmt == "sketchrnn-npz":
        for k, name in enumerate(("cat", "sun")):
            seqs = np.empty(10, dtype=object)
            seqs[:] = [_stroke3(r) for r in records[k * 10 : k * 10 + 10]]
            np.savez(folder / f"{name}.npz", train=seqs[:8], test=seqs[8:])
        return 20
    if fmt in ("mnist-idx", "mnist-csv", "npz"):
        return _write_arrays(fmt, folder, x, y)
    root = folder / "Images" if fmt == "stanford-dogs" else folder
    for k, name in enumerate(("n02085620-Chihuahua", "n02085782-Japanese_spaniel")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(x[k * 5 + i]).save(root / name / f"{i}.png")
    return 10


FORMATS = [
    "quickdraw-npy",
    "quickdraw-ndjson",
    "quickdraw-bin",
    "sketchrnn-npz",
    "mnist-idx",
    "mnist-csv",
    "npz",
    "imagefolder",
    "stanford-dogs",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_a_folder_a_pattern_and_names_a_missing_file(
    tmp_path, shared_data, mnist, capsys, fmt
):
    """`prepare in/bin --format quickdraw-bin` crashed with IsADirectoryError (without
    --format the same folder worked)."""
    folder = tmp_path / "in"
    n = write_format(fmt, folder, shared_data, mnist)
    folder_format = fmt in ("imagefolder", "stanford-dogs")
    pattern = str(tmp_path / "i*") if folder_format else str(folder / "*")
    for k, given in enumerate(
        ([str(folder), "--format", fmt], [str(folder)], [pattern, "--format", fmt])
    ):
        out = tmp_path / f"ds{k}"
        assert prepare(*given, "--out", str(out)) == 0, capsys.readouterr().err
        with PreparedDataset.open(out) as ds:
            assert sum(ds.size(s) for s in ds.splits) == n
    missing = folder / "missing"
    for given in ([str(missing)], [str(folder / "nothing*")]):
        capsys.readouterr()
        assert prepare(*given, "--format", fmt, "--out", str(tmp_path / "no")) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {given[0]}: no ") and err.count("\n") == 1, err
    assert not (tmp_path / "no").exists()


def test_a_file_format_given_a_folder_reads_the_files_named_for_it(tmp_path, mnist):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "full_numpy_bitmap_cat.npy", mnist["x_train"][:10].reshape(-1, 784))
    (folder / "README.md").write_text("not a bitmap file\n")
    (folder / ".hidden.npy").write_bytes(b"junk")
    assert prepare(str(folder), "--format", "quickdraw-npy", "--out", str(tmp_path / "ds")) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare(str(empty), "--format", "quickdraw-npy", "--out", str(tmp_path / "x")) == 2


# --- numbered labels with names; the recipe chosen and why ----------------------------


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_class_names_name_numbered_labels(tmp_path, mnist, capsys):
    files = write_idx_set(
        tmp_path / "m",
        mnist["x_train"][:200],
        mnist["y_train"][:200],
        mnist["x_test"][:50],
        mnist["y_test"][:50],
    )
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(NAMES) + "\n")
    for given in (",".join(NAMES), str(names_file)):
        out = tmp_path / f"ds{len(given)}"
        argv = [*map(str, files), "--out", str(out), "--class-names", given]
        assert prepare(*argv, "--categories", "three,seven") == 0
        with PreparedDataset.open(out) as ds:
            assert ds.classes == ["three", "seven"]  # --class-names' order, not a-z
            assert ds.manifest["label_numbers"] == {"three": 3, "seven": 7}
            x, y = ds.load("test")
            wanted = np.isin(mnist["y_test"][:50], [3, 7])
            assert sorted(ds.classes[v] for v in y) == sorted(
                NAMES[v] for v in mnist["y_test"][:50][wanted]
            )
    capsys.readouterr()
    argv = [*map(str, files), "--out", str(tmp_path / "bad")]
    assert prepare(*argv, "--class-names", "a,b,c") == 2
    err = capsys.readouterr().err
    assert "label " in err and "has no name: --class-names names labels 0 to 2" in err
    assert prepare(*argv, "--class-names", "a,a,b,c,d,e,f,g,h,i") == 2
    assert "a named more than once" in capsys.readouterr().err
    npy = tmp_path / "full_numpy_bitmap_cat.npy"
    np.save(npy, mnist["x_train"][:10].reshape(-1, 784))
    assert prepare(str(npy), "--out", str(tmp_path / "bad"), "--class-names", "a,b") == 2
    assert "whose classes have names already" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_labels_past_nine_are_classes_in_number_order(tmp_path, mnist):
    """EMNIST's letters are labelled 1..26 in IDX files: they were refused ("not a digit")."""
    y = (mnist["y_train"][:200] + 1) * 2  # 2, 4, ... 20
    files = write_idx_set(tmp_path / "m", mnist["x_train"][:200], y, mnist["x_test"][:20],
                          (mnist["y_test"][:20] + 1) * 2)  # fmt: skip
    assert prepare(*map(str, files), "--out", str(tmp_path / "ds")) == 0
    with PreparedDataset.open(tmp_path / "ds") as ds:
        assert ds.classes == [str(v) for v in range(2, 21, 2)]  # 2 before 10


def test_images_that_fill_their_frame_keep_it_and_the_summary_says_why(
    tmp_path, shared_data, mnist, capsys
):
    """MNIST's default recipe crops to the ink and re-centres in a 20x20 box: it shrank
    images that already fill their frame (here Quick, Draw! bitmaps, drawn to the edge)."""
    with np.load(shared_data / "quickdraw_345x80.npz") as q:
        x, y = q["x"][:400], q["y"][:400] - q["y"][0]
    files = write_idx_set(tmp_path / "q", x[:300], y[:300], x[300:], y[300:])
    out = tmp_path / "filled"
    assert main(["data", "prepare", *map(str, files), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recipe none" in text and "why: mnist-idx inputs whose images already fill" in text
    splits = stored(out)
    assert digests(splits["test"][0]) == digests(x[300:])  # kept as they are
    # MNIST's own digits still get MNIST's recipe, and are told why.
    files = write_idx_set(tmp_path / "d", mnist["x_train"][:100], mnist["y_train"][:100],
                          mnist["x_test"][:20], mnist["y_test"][:20])  # fmt: skip
    assert main(["data", "prepare", *map(str, files), "--out", str(tmp_path / "digits")]) == 0
    text = capsys.readouterr().out
    assert "recipe mnist" in text and "like MNIST's digits" in text
    assert main(["data", "info", str(tmp_path / "digits")]) == 0
    assert "why: mnist-idx inputs that sit in a box" in capsys.readouterr().out
    png = tmp_path / "grid.png"
    assert main(["data", "show", str(out), "--out", str(png)]) == 0
    assert "recipe none" in capsys.readouterr().out
    with Image.open(png) as img:  # a caption above the grid (grey text on white)
        top = np.asarray(img.convert("L"))[:30]
    assert top.min() < 200 and top.max() == 255


# --- data show: photos ----------------------------------------------------------------


def test_show_draws_photos_in_big_smoothly_reduced_cells(tmp_path, shared_data):
    """224-px photos were drawn as 52-px nearest-neighbour thumbnails."""
    from imgclass.data.show import cell_size, example_grid

    photos = shared_data / "photos" / "cats_vs_dogs"
    out = tmp_path / "ds"
    argv = [str(photos), "--out", str(out), "--per-class", "1", "--split", "100/0/0"]
    assert prepare(*argv) == 0
    with PreparedDataset.open(out) as ds:
        assert ds.image_shape == (224, 224, 3)
        grid = example_grid(ds, "train", per_class=1)
        image = ds.images("train")[int(np.flatnonzero(ds.labels("train") == 1)[0])]
    cell = cell_size((224, 224, 3))
    assert cell >= 150 and grid.shape[0] > 2 * cell
    tile = grid[-cell + 2 : -2, -cell + 2 : -2]  # the last row's photo, 2 px of margin
    smooth = Image.fromarray(image).resize((cell - 4, cell - 4), Image.Resampling.LANCZOS)
    blocky = Image.fromarray(image).resize((cell - 4, cell - 4), Image.Resampling.NEAREST)
    error = np.abs(tile.astype(int) - np.asarray(smooth, dtype=int)).mean()
    assert error < 2 < np.abs(tile.astype(int) - np.asarray(blocky, dtype=int)).mean()
