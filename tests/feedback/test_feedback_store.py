"""The feedback store against real SQLite files (no mocks)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from imgclass.errors import FeedbackError
from imgclass.feedback import store as store_module
from imgclass.feedback.store import FeedbackNotFound, FeedbackStore

STROKE = [[[10, 20, 30], [10, 40, 10], [0, 16, 33]]]


def add_strokes(store, label, x=0, **kw):
    return store.add(label=label, input_kind="strokes", strokes=[[[x, x + 5], [0, 9]]], **kw)


def test_add_dedupes_on_the_normalised_input_and_label(store):
    first = store.add(label="cat", input_kind="strokes", strokes=STROKE, model="m", version="v1")
    assert first[1] is False
    as_floats = [[[float(v) for v in c] for c in s] for s in STROKE]
    assert store.add(label="cat", input_kind="strokes", strokes=as_floats) == (first[0], True)
    other_label = store.add(label="dog", input_kind="strokes", strokes=STROKE)
    assert other_label[1] is False and other_label[0] != first[0]
    image = store.add(label="cat", input_kind="image", image=b"\x89PNG fake bytes")
    assert image[1] is False
    assert store.add(label="cat", input_kind="image", image=b"\x89PNG fake bytes")[1] is True
    assert store.count() == 3


def test_the_unique_index_decides_duplicates_between_two_stores(tmp_path):
    """Two engines (as two server processes would have) race on the same inputs: each
    input is stored once and every answer names that row."""
    path = tmp_path / "fb.sqlite3"
    stores = [FeedbackStore.from_path_or_url(path) for _ in range(2)]
    answers: list[tuple[int, int, bool]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def post(k: int) -> None:
        start.wait()
        for i in range(20):
            fid, dup = add_strokes(stores[k % 2], "cat", x=i)
            with lock:
                answers.append((i, fid, dup))

    threads = [threading.Thread(target=post, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].count() == 20
    for i in range(20):
        mine = [(fid, dup) for j, fid, dup in answers if j == i]
        assert len(mine) == 8 and len({fid for fid, _ in mine}) == 1
        assert sum(not dup for _, dup in mine) == 1
    for s in stores:
        s.close()


def test_list_filters_and_pages_newest_first(store):
    ids = [add_strokes(store, label, x=i, model=model)[0] for i, (label, model) in
           enumerate([("cat", "a"), ("dog", "a"), ("cat", "b"), ("cat", "a")])]  # fmt: skip
    assert [r["id"] for r in store.list()] == ids[::-1]
    assert [r["id"] for r in store.list(label="cat", model="a")] == [ids[3], ids[0]]
    assert [r["id"] for r in store.list(limit=2, offset=1)] == [ids[2], ids[1]]
    store.set_status([ids[1]], "accepted")
    assert [r["id"] for r in store.list(status="accepted")] == [ids[1]]
    row = store.list(limit=1)[0]
    assert "image" not in row and "strokes" not in row
    assert row["created"].endswith("Z") and row["status"] == "new" and row["model"] == "a"
    assert store.count(label="cat") == 3 and store.count("new", model="a") == 2
    with pytest.raises(FeedbackError, match="unknown status 'done'"):
        store.list(status="done")


def test_get_with_and_without_input(store):
    predicted = [{"label": "dog", "probability": 0.7}]
    fid, _ = store.add(
        label="cat", input_kind="strokes", strokes=STROKE, predicted=predicted, client_id="c1"
    )
    plain = store.get(fid)
    assert "strokes" not in plain and plain["predicted"] == predicted
    assert plain["client_id"] == "c1" and len(plain["content_hash"]) == 64
    full = store.get(fid, with_input=True)
    assert full["strokes"] == STROKE and full["image"] is None
    img_id, _ = store.add(label="cat", input_kind="image", image=b"bytes")
    assert store.get(img_id, with_input=True)["image"] == b"bytes"
    with pytest.raises(FeedbackNotFound, match="no feedback with id 999") as info:
        store.get(999)
    assert isinstance(info.value, LookupError) and isinstance(info.value, FeedbackError)


def test_set_status_and_delete_report_rows_changed(store):
    ids = [add_strokes(store, "cat", x=i)[0] for i in range(3)]
    assert store.set_status([ids[0], ids[1], 12345], "accepted") == 2
    assert store.get(ids[0])["reviewed"] is not None
    assert store.set_status([ids[0]], "new") == 1 and store.get(ids[0])["reviewed"] is None
    assert store.count("accepted") == 1
    with pytest.raises(FeedbackError, match="unknown status"):
        store.set_status(ids, "maybe")
    assert store.set_status([], "rejected") == 0
    assert store.delete([ids[2], 777]) == 1 and store.count() == 2
    assert store.counts()["status"] == {"new": 1, "accepted": 1, "rejected": 0}


def test_bad_submissions_are_refused_and_nothing_is_written(store):
    bad = [
        {"label": "", "input_kind": "strokes", "strokes": STROKE},
        {"label": "cat", "input_kind": "video", "strokes": STROKE},
        {"label": "cat", "input_kind": "strokes", "strokes": [[[1, True], [1, 2]]]},
        {"label": "cat", "input_kind": "strokes", "strokes": [[[1, 2], [1]]]},
        {"label": "cat", "input_kind": "strokes", "strokes": [[[1, float("nan")], [1, 2]]]},
        {"label": "cat", "input_kind": "strokes", "strokes": "not strokes"},
        {"label": "cat", "input_kind": "image"},
    ]
    for kwargs in bad:
        with pytest.raises(FeedbackError):
            store.add(**kwargs)
    assert store.count() == 0


def test_iter_inputs_pages_through_everything_oldest_first(store, monkeypatch):
    monkeypatch.setattr(store_module, "PAGE", 3)
    ids = [add_strokes(store, "cat", x=i)[0] for i in range(8)]
    img, _ = store.add(label="dog", input_kind="image", image=b"img")
    store.set_status([*ids[:7], img], "accepted")
    items = list(store.iter_inputs())
    assert [i.id for i in items] == [*ids[:7], img]
    assert items[0].strokes == [[[0, 5], [0, 9]]] and items[0].image is None
    assert items[-1].image == b"img" and items[-1].strokes is None
    assert items[-1].input_kind == "image" and items[-1].created.endswith("Z")
    assert [i.id for i in store.iter_inputs(status=None)] == [*ids, img]
    assert [i.id for i in store.iter_inputs(status="new")] == [ids[7]]


def test_sqlite_runs_in_wal_mode(store, tmp_path):
    with sqlite3.connect(tmp_path / "fb.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_paths_and_urls(tmp_path):
    nested = tmp_path / "a" / "b" / "fb.sqlite3"
    with FeedbackStore.from_path_or_url(nested) as s:
        assert nested.is_file() and s.location == f"sqlite:///{nested}"
    with FeedbackStore(f"sqlite:///{nested}") as s:
        assert s.count() == 0
    with pytest.raises(FeedbackError, match="unknown database"):
        FeedbackStore("nosuchdb://host/x")
    with pytest.raises(FeedbackError, match="in-memory"):
        FeedbackStore("sqlite://")
    with pytest.raises(FeedbackError, match="cannot open"):
        FeedbackStore.from_path_or_url(tmp_path)  # a folder is not a database file


# --- one drawing, one answer ---------------------------------------------------------------


def test_a_second_answer_for_a_drawing_replaces_the_first(store):
    first, dup = store.add(label="cat", input_kind="strokes", strokes=STROKE, drawing_id="d1")
    assert dup is False
    again = store.add(label="cat", input_kind="strokes", strokes=STROKE, drawing_id="d1")
    assert again == (first, True)  # the same answer twice: kept, reported as a duplicate
    store.set_status([first], "accepted")
    second = store.add(label="dog", input_kind="strokes", strokes=STROKE, drawing_id="d1")
    assert second == (first, False)  # the same row, now with the other answer
    assert [(r["label"], r["drawing_id"], r["status"], r["reviewed"]) for r in store.list()] == [
        ("dog", "d1", "new", None)
    ]  # a changed answer is reviewed again
    other, _ = store.add(label="cat", input_kind="strokes", strokes=STROKE, drawing_id="d2")
    assert store.count() == 2 and other != first  # another drawing: its own row


def test_an_answer_that_exists_elsewhere_still_removes_the_drawings_old_answer(store):
    """The new answer is already stored (same strokes, same label, from another drawing or
    none): the duplicate is reported and the drawing's contradicting row is gone."""
    kept, _ = store.add(label="dog", input_kind="strokes", strokes=STROKE)
    old, _ = store.add(label="cat", input_kind="strokes", strokes=STROKE, drawing_id="d1")
    assert store.add(label="dog", input_kind="strokes", strokes=STROKE, drawing_id="d1") == (
        kept,
        True,
    )
    assert [r["id"] for r in store.list()] == [kept]


def test_concurrent_answers_for_one_drawing_leave_one_row(tmp_path):
    """Two server processes (two engines) get answers for the same drawing at once: one
    row stays, holding one of the answers."""
    path = tmp_path / "fb.sqlite3"
    stores = [FeedbackStore.from_path_or_url(path) for _ in range(2)]
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def post(k: int) -> None:
        start.wait()
        try:
            for i in range(10):
                label = ["cat", "dog", "sun"][(k + i) % 3]
                stores[k % 2].add(
                    label=label, input_kind="strokes", strokes=STROKE, drawing_id="same"
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = stores[0].list()
    assert len(rows) == 1 and rows[0]["drawing_id"] == "same"
    for s in stores:
        s.close()


def test_game_rounds_keep_their_origin_and_are_counted_per_word(store):
    rounds = [("sun", True), ("sun", False), ("cup", False)]
    for k, (word, won) in enumerate(rounds):
        store.add(
            label=word, input_kind="strokes", strokes=[[[k, 9], [0, 9], [0, 120]]],
            source="game", prompt=word, recognized=won,
            predicted=[{"label": "cup", "probability": 0.4}],
        )  # fmt: skip
    add_strokes(store, "sun", source="page")
    assert store.game_results() == {"sun": (2, 1), "cup": (1, 0)}
    game = store.list(source="game")
    assert len(game) == 3 and store.count(source="page") == 1
    assert {(r["prompt"], r["recognized"]) for r in game} == {
        ("sun", True), ("sun", False), ("cup", False)
    }  # fmt: skip
    assert store.get(game[0]["id"], with_input=True)["strokes"][0][2] == [0, 120]  # timing kept
    assert {i.source for i in store.iter_inputs(status="new")} == {"game", "page"}


def test_bad_origins_are_refused(store):
    with pytest.raises(FeedbackError, match="unknown source"):
        add_strokes(store, "cat", source="bot")
    with pytest.raises(FeedbackError, match="game rounds"):
        add_strokes(store, "cat", source="page", prompt="cat")
    with pytest.raises(FeedbackError, match="drawing_id"):
        add_strokes(store, "cat", drawing_id="x" * 65)
    with pytest.raises(FeedbackError, match="unknown source"):
        store.list(source="bot")
    assert store.count() == 0
