"""The game's endpoints and one-answer-per-drawing feedback, with a real bundle and a
real SQLite store (FastAPI's in-process client; the page's own path through a real
uvicorn server is in test_game_browser.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient

from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings

ADMIN = {"Authorization": "Bearer s3cret"}
TIMED = [[[10, 60, 120], [20, 90, 200], [0, 35, 71]], [[30, 40], [5, 250], [400, 460]]]


@pytest.fixture
def client(digits_bundle, tmp_path):
    settings = ServeSettings(
        models=[str(digits_bundle)], feedback_db=tmp_path / "fb.sqlite3", admin_token="s3cret"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def rows(client, **filters):
    return client.get("/v1/feedback", params=filters, headers=ADMIN).json()["items"]


def test_one_drawing_gets_one_answer_the_latest(client):
    """Send (a correction) then Right! on the same drawing: one row, with the last answer."""
    drawing = {"input": {"strokes": TIMED}, "drawing_id": "d-1", "source": "page"}
    first = client.post("/v1/feedback", json={**drawing, "label": "7"}).json()
    second = client.post("/v1/feedback", json={**drawing, "label": "1"}).json()
    assert second == {"id": first["id"], "duplicate": False}
    [row] = rows(client)
    assert (row["label"], row["drawing_id"], row["source"]) == ("1", "d-1", "page")
    again = client.post("/v1/feedback", json={**drawing, "label": "1"}).json()
    assert again == {"id": first["id"], "duplicate": True}
    other = client.post("/v1/feedback", json={**drawing, "drawing_id": "d-2", "label": "7"})
    assert other.json()["id"] != first["id"] and len(rows(client)) == 2
    plain = client.post("/v1/feedback", json={"input": {"strokes": TIMED}, "label": "3"}).json()
    assert [r["source"] for r in rows(client) if r["id"] == plain["id"]] == ["api"]


def test_bad_drawing_ids_and_sources_are_refused(client):
    base = {"input": {"strokes": TIMED}, "label": "7"}
    bad = client.post("/v1/feedback", json={**base, "drawing_id": "a b"})
    assert bad.status_code == 422 and "drawing_id" in bad.json()["detail"]
    game = client.post("/v1/feedback", json={**base, "source": "game"})
    assert game.status_code == 422 and "source" in game.json()["detail"]
    assert rows(client) == []


def test_a_game_round_is_stored_with_its_prompt_guesses_and_timing(client):
    body = {
        "word": "4",
        "strokes": TIMED,
        "recognized": False,
        "predicted": [{"label": "1", "probability": 0.6}, {"label": "4", "probability": 0.2}],
        "drawing_id": "g-1",
        "client_id": "c-1",
    }
    answer = client.post("/v1/game/rounds", json=body)
    assert answer.status_code == 200 and answer.json()["duplicate"] is False
    [row] = rows(client, source="game")
    assert (row["label"], row["prompt"], row["recognized"], row["source"]) == (
        "4", "4", answer.json()["recognized"], "game"
    )  # fmt: skip
    assert row["predicted"] == answer.json()["predicted"]  # the server's guesses
    detail = client.get(f"/v1/feedback/{row['id']}", headers=ADMIN).json()
    assert detail["strokes"] == TIMED  # the points' times (ms) are kept
    assert rows(client, source="page") == []
    unknown = client.post("/v1/game/rounds", json={**body, "word": "giraffe"})
    assert unknown.status_code == 422 and "giraffe" in unknown.json()["detail"]
    empty = client.post("/v1/game/rounds", json={**body, "strokes": []})
    assert empty.status_code == 422
    assert len(rows(client)) == 1


def test_game_words_are_distinct_reproducible_and_carry_the_rules(client):
    one = client.get("/v1/game/words", params={"n": 6, "seed": 7}).json()
    assert one == client.get("/v1/game/words", params={"n": 6, "seed": 7}).json()
    assert len(set(one["words"])) == 6 and set(one["words"]) <= {str(d) for d in range(10)}
    assert (one["round_seconds"], one["win_probability"]) == (20.0, 0.5)
    assert len(client.get("/v1/game/words", params={"n": 50}).json()["words"]) == 10
    assert client.get("/v1/game/words", params={"n": 0}).status_code == 422


def asked(client, games: int = 300) -> Counter:
    counts: Counter = Counter()
    for seed in range(games):
        counts.update(client.get("/v1/game/words", params={"n": 3, "seed": seed}).json()["words"])
    return counts


def test_lost_game_rounds_make_a_word_come_up_more(client):
    before = asked(client)
    word = min(before, key=before.__getitem__)  # the word asked least: the model knows it
    for k in range(12):
        client.post(
            "/v1/game/rounds",
            json={"word": word, "strokes": [[[k, 50], [0, 90], [0, 100]]], "recognized": False},
        )
    after = asked(client)
    assert after[word] > 2 * before[word]


def test_the_classes_weakest_on_the_test_split_are_asked_most(client):
    """The words endpoint reads the model's own test-split report (as the Model tab does)."""
    name = client.get("/v1/models").json()["models"][0]["name"]
    report = client.get(f"/v1/models/{name}/report").json()["per_class"]
    by_recall = sorted(report, key=lambda c: report[c]["recall"])
    weak, strong = by_recall[:3], by_recall[-3:]
    mean = {
        k: sum(report[c]["recall"] for c in g) / 3 for k, g in (("weak", weak), ("strong", strong))
    }
    assert mean["strong"] - mean["weak"] > 0.08, report  # different enough for weights to show
    counts = asked(client, games=400)
    assert sum(counts[c] for c in weak) > 1.3 * sum(counts[c] for c in strong)
    assert set(counts) == set(report)  # and every class came up


def game_client(bundle, db, win_probability: float) -> TestClient:
    settings = ServeSettings(
        models=[str(bundle)],
        feedback_db=db,
        admin_token="s3cret",
        game_win_probability=win_probability,
    )
    return TestClient(create_app(settings))


def test_the_server_decides_whether_a_round_was_recognized(digits_bundle, tmp_path):
    """The page's `recognized` is a claim: the served model reads the strokes, and the
    round is recognised when its top guess is the word at the game's win probability."""
    with game_client(digits_bundle, tmp_path / "a.db", 0.5) as c:
        guess = c.post("/v1/predict?top_k=10", json={"strokes": TIMED}).json()["predictions"]
    top, last = guess[0], guess[-1]
    rounds = [  # (win probability, word, what the page claims) -> the server's verdict
        (top["probability"] - 0.01, top["label"], False, True),
        (min(1.0, top["probability"] + 0.01), top["label"], True, False),
        (0.0, last["label"], True, False),
    ]
    for k, (win, word, claim, expected) in enumerate(rounds):
        with game_client(digits_bundle, tmp_path / f"{k}.db", win) as c:
            body = {"word": word, "strokes": TIMED, "recognized": claim, "drawing_id": "g-1"}
            answer = c.post("/v1/game/rounds", json=body).json()
            assert answer["recognized"] is expected, (win, word, claim, answer)
            [row] = rows(c, source="game")
            assert row["recognized"] is expected
            assert row["predicted"][0]["label"] == top["label"]
            assert row["predicted"][0]["probability"] == pytest.approx(top["probability"])
            without = c.post("/v1/game/rounds", json={"word": word, "strokes": TIMED})
            assert without.status_code == 200 and without.json()["recognized"] is expected


def test_a_drawing_id_is_its_first_clients_to_answer_again(client):
    """One drawing, one answer, from the client that drew it: another client sending an
    answer under the same drawing id is refused (409) and changes nothing."""
    mine = {"input": {"strokes": TIMED}, "drawing_id": "d-9", "client_id": "alice"}
    first = client.post("/v1/feedback", json={**mine, "label": "7"}).json()
    theirs = client.post("/v1/feedback", json={**mine, "client_id": "mallory", "label": "1"})
    assert theirs.status_code == 409 and "drawing_id" in theirs.json()["detail"]
    anonymous = client.post("/v1/feedback", json={**mine, "client_id": None, "label": "1"})
    assert anonymous.status_code == 409
    [row] = rows(client)
    assert (row["id"], row["label"]) == (first["id"], "7")
    again = client.post("/v1/feedback", json={**mine, "label": "1"})  # alice changes her mind
    assert again.json() == {"id": first["id"], "duplicate": False}
    assert [r["label"] for r in rows(client)] == ["1"]
    # the game's rounds too
    game = {"word": "4", "strokes": TIMED, "drawing_id": "g-9", "client_id": "alice"}
    assert client.post("/v1/game/rounds", json=game).status_code == 200
    other = client.post("/v1/game/rounds", json={**game, "word": "5", "client_id": "mallory"})
    assert other.status_code == 409
    assert [r["label"] for r in rows(client, source="game")] == ["4"]
    # without client ids (API users), a second answer still replaces the first
    plain = {"input": {"strokes": TIMED[:1]}, "drawing_id": "d-10"}
    one = client.post("/v1/feedback", json={**plain, "label": "2"}).json()
    two = client.post("/v1/feedback", json={**plain, "label": "3"}).json()
    assert two == {"id": one["id"], "duplicate": False}
