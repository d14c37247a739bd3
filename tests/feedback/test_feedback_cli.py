"""``imgclass feedback list | accept | reject | stats | migrate`` on a real SQLite file."""

from __future__ import annotations

import json

import pytest

from imgclass.cli import main
from imgclass.feedback import db as db_module
from imgclass.feedback.store import FeedbackStore


def test_review_from_the_command_line(tmp_path, capsys):
    db = str(tmp_path / "fb.sqlite3")
    assert main(["feedback", "migrate", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revision"] == db_module.head_revision()
    with FeedbackStore.from_path_or_url(db) as store:
        ids = [
            store.add(
                label=label,
                input_kind="image",
                image=f"{label}{k}".encode(),
                predicted=[{"label": "dog", "probability": 0.6}],
            )[0]
            for k, label in enumerate(("cat", "cat", "owl"))
        ]
    assert main(["feedback", "list", "--db", db]) == 0
    table = capsys.readouterr().out
    assert "predicted" in table and "owl" in table and "3 of 3 shown" in table
    assert main(["feedback", "accept", str(ids[0]), str(ids[2]), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"changed": 2, "status": "accepted", "missing": 0}
    assert main(["feedback", "reject", str(ids[1]), "999", "--db", db]) == 1
    assert "1 marked rejected; 1 id not found" in capsys.readouterr().out
    assert main(["feedback", "list", "--db", db, "--status", "accepted", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 2 and [i["id"] for i in listed["items"]] == [ids[2], ids[0]]
    assert main(["feedback", "stats", "--db", db, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["status"] == {"new": 0, "accepted": 2, "rejected": 1}
    assert stats["label"]["cat"] == {"new": 0, "accepted": 1, "rejected": 1}


def test_clear_errors(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "none.sqlite3")
    assert main(["feedback", "list", "--db", missing]) == 2
    assert "no feedback database at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite3").exists()
    assert main(["feedback", "stats", "--db", "nosuch://x/y"]) == 2
    assert "unknown database" in capsys.readouterr().err
    monkeypatch.setenv("IMGCLASS_FEEDBACK_DB", missing)
    assert main(["feedback", "migrate"]) == 0 and (tmp_path / "none.sqlite3").exists()
    with pytest.raises(SystemExit, match="^2$"):  # argparse: ids are integers
        main(["feedback", "accept", "x"])
    assert "invalid int value: 'x'" in capsys.readouterr().err
    assert main(["feedback"]) == 2
