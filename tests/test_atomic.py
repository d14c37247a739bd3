"""All-or-nothing file and folder writes, and the process check."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from imgclass import atomic  # noqa: E402


def test_write_text_replaces_in_one_step_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert atomic.write_text(path, "new") == path
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic.replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_save_figure_writes_a_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = atomic.save_figure(fig, tmp_path / "f.png")
    assert plt.fignum_exists(fig.number)  # left open unless asked
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_save_figure_can_close_it_and_makes_the_folder(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = atomic.save_figure(fig, tmp_path / "new" / "f.png", close=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_safe_name():
    assert atomic.safe_name("cnn resnet/width=48") == "cnn_resnet_width_48"
    assert atomic.safe_name("..hidden..") == "hidden"
    assert atomic.safe_name("///", "study") == "study"


def test_folder_appears_complete_in_one_step(tmp_path):
    dest = tmp_path / "out" / "bundle"
    with atomic.folder(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.is_dir() and not list(tmp.iterdir())
        (tmp / "a.txt").write_text("a")
        assert not dest.exists()  # nothing at dest until the block is done
    assert [p.name for p in dest.iterdir()] == ["a.txt"]
    assert [p.name for p in dest.parent.iterdir()] == ["bundle"]  # no temporary left


def test_a_failed_folder_leaves_nothing(tmp_path):
    dest = tmp_path / "report"
    with pytest.raises(RuntimeError, match="interrupted"), atomic.folder(dest) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_folder_keeps_the_old_one(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic.folder(dest) as tmp:
        (tmp / "new.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_folder_overwrite_replaces_the_old_one_whole(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic.folder(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]  # nothing of the old one stays
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # nor its aside copy


def test_folder_without_overwrite_refuses_an_existing_dest(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    ran = False
    with (
        pytest.raises(FileExistsError, match="report already exists"),
        atomic.folder(dest, overwrite=False),
    ):
        ran = True
    assert not ran  # refused before any work
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    fresh = tmp_path / "fresh"
    with atomic.folder(fresh, overwrite=False) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (fresh / "a.txt").read_text() == "a"


def test_process_alive():
    assert atomic.process_alive(os.getpid())
    assert not atomic.process_alive(None) and not atomic.process_alive(0)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not atomic.process_alive(int(done.stdout))
