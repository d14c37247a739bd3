"""`imgclass data prepare` keeps memory bounded per byte: files that declare far more
than they hold are refused from what they declare, before anything is allocated, with
exit 2, one line naming the file, and nothing left behind; legitimate huge photos are
decoded only as large as the recipe needs.

Each case runs the CLI in a child process under an address-space limit (RLIMIT_AS,
1.5 GiB), so that a regression fails here instead of taking the machine down, and
checks the child's peak resident memory (VmHWM) against the issue's 1 GB goal.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import memory_bombs as bombs
import pytest

REPO = Path(__file__).resolve().parents[2]
ADDRESS_SPACE = 1536 << 20  # RLIMIT_AS of the child
PEAK_RSS = 1 << 30  # the goal for a refusal (and for these photos)
# Runs the CLI and writes the process's peak resident memory (VmHWM, kB) to argv[1]:
# ru_maxrss would carry over the forked copy of this test process across exec.
CHILD = """
import sys
from imgclass.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    status = open("/proc/self/status").read().splitlines()
    hwm = next(line for line in status if line.startswith("VmHWM"))
    open(sys.argv[1], "w").write(hwm.split()[1])
sys.exit(rc)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def prepare(tmp_path: Path, *args: str) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in bytes) of `imgclass -q data prepare ARGS`."""
    peak_file = tmp_path / "peak-kb"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(peak_file), "-q", "data", "prepare", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_memory,
        timeout=300,
    )
    return proc.returncode, proc.stderr, int(peak_file.read_text()) * 1024


def assert_refused(tmp_path: Path, culprit: Path, flag: str, *extra: str) -> str:
    """Prepare ``culprit`` into an empty folder: refused with exit 2, one line naming the
    file and the flag that would raise the limit, in bounded memory, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    rc, err, peak = prepare(tmp_path, str(culprit), "--out", str(work / "out"), *extra)
    lines = err.strip().splitlines()
    assert rc == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {culprit}"), err[-2000:]
    assert flag in lines[0]
    assert peak < PEAK_RSS, f"peak RSS {peak / 2**20:.0f} MiB"
    assert list(work.iterdir()) == []  # no output, no hidden partial folder
    return lines[0]


@pytest.mark.parametrize("how", ["ndarray", "build"])
def test_sketchrnn_pickle_asking_for_billions_of_objects_is_refused(tmp_path, how):
    bomb = bombs.sketchrnn_pickle_bomb(tmp_path / "sketchrnn_cat.npz", how)
    line = assert_refused(tmp_path, bomb, "--max-array-bytes")
    assert "(3000000000,)" in line


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path):
    bomb = bombs.npz_zip_bomb(tmp_path / "bomb.npz", n=1024)  # 977 MiB from 1 MB
    line = assert_refused(tmp_path, bomb, "--max-compression-ratio")
    assert "array 'x'" in line


def test_gzipped_idx_bomb_is_refused_before_inflating(tmp_path):
    bomb = bombs.idx_gzip_bomb(tmp_path / "mnist", n=1024)
    assert_refused(tmp_path, bomb, "--max-compression-ratio")


def test_bin_drawing_of_billions_of_points_is_refused_from_its_stroke_headers(tmp_path):
    bomb = bombs.bin_points_bomb(tmp_path / "full_binary_cat.bin.gz")
    line = assert_refused(tmp_path, bomb, "points")
    assert "drawing 0" in line


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    from PIL import Image

    (tmp_path / "photos" / "cat").mkdir(parents=True)
    huge = tmp_path / "photos" / "cat" / "huge.png"
    Image.new("L", (9000, 6000)).save(huge)  # 54M pixels, under Pillow's own 89M guard
    assert_refused(tmp_path, tmp_path / "photos", "--max-image-pixels")


def test_folder_of_huge_photos_is_prepared_at_the_size_the_recipe_needs(tmp_path):
    root = bombs.huge_photos(tmp_path / "photos")  # 25 JPEGs, 4 PNGs of 7000 x 7000
    out = tmp_path / "out"
    rc, err, peak = prepare(tmp_path, str(root), "--out", str(out))
    assert rc == 0, err[-2000:]
    assert peak < PEAK_RSS, f"peak RSS {peak / 2**20:.0f} MiB"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_shape"] == [224, 224, 3] and manifest["classes"] == ["jpeg", "png"]


def test_refusal_with_overwrite_leaves_the_previous_dataset(tmp_path):
    from PIL import Image

    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "photos" / "cat" / "a.png")
    out = tmp_path / "out"
    assert prepare(tmp_path, str(tmp_path / "photos"), "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bomb = bombs.npz_zip_bomb(tmp_path / "bomb.npz", n=1024)
    rc, err, _ = prepare(tmp_path, str(bomb), "--out", str(out), "--overwrite")
    assert rc == 2 and "bomb.npz" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
