"""Hostile inputs on the public endpoints and in the ndjson the CLI reads (issue 10).

Each used to end in a 500 (with the keep-alive connection reset), a FastAPI 400 "There
was an error parsing the body", a silently accepted drawing, or a traceback; each is now
one 4xx JSON ``detail`` naming the place (``items[3].strokes[0][0][5]``), or for the CLI
one line naming the file and line, exit status 2. Real app, real ONNX bundles, real
SQLite, real uvicorn for the connection test.
"""

from __future__ import annotations

import http.client
import json

import pytest
from inputs_support import image_bundle, real_server, sequence_bundle

BIG400 = "1" * 400  # parses; float() of it overflows
BIG5000 = "1" * 5000  # more digits than int() reads (sys.get_int_max_str_digits)
DEEP = "[" * 5000 + "]" * 5000  # past the recursion limit
GOOD = [[[10, 120, 200], [20, 60, 180]]]


@pytest.fixture(scope="module")
def app(tmp_path_factory, digits_dir):
    from imgclass.serve.app import create_app
    from imgclass.serve.settings import ServeSettings

    root = tmp_path_factory.mktemp("hostile-inputs")
    models = [image_bundle(root / "img" / "bundle", digits_dir), sequence_bundle(root / "seq")]
    settings = ServeSettings(
        models=[str(m) for m in models], feedback_db=root / "fb.sqlite3", admin_token="t"
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def post(client, path: str, text: str, **headers: str):
    headers = {"content-type": "application/json", **headers}
    return client.post(path, content=text.encode(), headers=headers)


def detail(response, status: int = 422) -> str:
    assert response.status_code == status, response.text[:300]
    return response.json()["detail"]


def predict_body(strokes: str) -> str:
    return '{"strokes": ' + strokes + "}"


def batch_body(strokes: str) -> str:
    """Three good items, then the one under test as ``items[3]``."""
    good = json.dumps({"strokes": GOOD})
    return '{"items": [' + ", ".join([good] * 3) + ', {"strokes": ' + strokes + "}]}"


def feedback_body(strokes: str) -> str:
    return '{"input": {"strokes": ' + strokes + '}, "label": "3"}'


BODIES = {
    "/v1/predict": (predict_body, "strokes"),
    "/v1/predict/batch": (batch_body, "items[3].strokes"),
    "/v1/feedback": (feedback_body, "input.strokes"),
}


@pytest.mark.parametrize("path", BODIES)
def test_integer_of_400_digits_is_named(client, path):
    """float() of it raised OverflowError: a 500 on all three routes."""
    body, name = BODIES[path]
    text = detail(post(client, path, body(f"[[[1, 2], [3, {BIG400}]]]")))
    assert text == f"{name}[0][1][1]: must be between -1,000,000 and 1,000,000"


@pytest.mark.parametrize("path", BODIES)
def test_integer_of_5000_digits_is_a_422(client, path):
    """json.loads raised ValueError: a 500 on /v1/predict, a 400 saying nothing elsewhere."""
    body, _ = BODIES[path]
    text = detail(post(client, path, body(f"[[[1, 2], [3, {BIG5000}]]]")))
    assert text.startswith("body: a number at character ") and "more than 4300 digits" in text


@pytest.mark.parametrize("path", BODIES)
@pytest.mark.parametrize("where", ["top", "strokes"])
def test_nesting_5000_deep_is_a_422(client, path, where):
    """json.loads raised RecursionError: a 500 on /v1/predict, a 400 elsewhere."""
    body, _ = BODIES[path]
    text = DEEP if where == "top" else body(DEEP)
    assert detail(post(client, path, text)) == (
        "body: nested deeper than 32 levels of arrays and objects"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/predict?model=img",
        "/v1/predict?model=seq",
        "/v1/predict/batch?model=img",
        "/v1/predict/batch?model=seq",
        "/v1/feedback",
    ],
)
def test_strokes_one_level_too_deep_are_named(client, path):
    """``[[[[1,2]],[[3,4]]]]`` passed the old check and the bundle raised DataFormatError
    (a 500), also inside a batch item."""
    body, name = BODIES[path.partition("?")[0]]
    response = post(client, path, body("[[[[1,2]],[[3,4]]]]"))
    assert detail(response) == f"{name}[0][0][0]: must be a number, not a list"


@pytest.mark.parametrize(
    ("strokes", "place", "kind"),
    [
        ('[[["1", "2"], [3, 4]]]', "[0][0][0]", "a string"),
        ("[[[1, 2], [true, false]]]", "[0][1][0]", "true"),
        ("[[[1, 2], [3, 4]], [[5, null], [6, 7]]]", "[1][0][1]", "null"),
        ("[[[1, 2], [3, 4], [0, {}]]]", "[0][2][1]", "an object"),
    ],
)
def test_predict_refuses_what_feedback_refuses(client, strokes, place, kind):
    """/v1/predict took strings and booleans as numbers that /v1/feedback refused."""
    for path, (body, name) in BODIES.items():
        text = detail(post(client, path, body(strokes)))
        assert text == f"{name}{place}: must be a number, not {kind}", path


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ('{"strokes": [[[1, 2], [3]]]}', "items[3].strokes[0]: x, y (and t) must be non-empty"),
        ("{}", "items[3]: send exactly one of 'image_base64' and 'strokes'"),
        ('{"image_base64": "%%%"}', "items[3]: image_base64 is not valid base64"),
        ('{"strokes": "abc"}', "items[3].strokes: Input should be a valid list"),
    ],
)
def test_a_bad_batch_item_is_named(client, item, expected):
    good = json.dumps({"strokes": GOOD})
    text = '{"items": [' + ", ".join([good] * 3 + [item]) + "]}"
    assert detail(post(client, "/v1/predict/batch", text)).startswith(expected)


def test_batch_item_too_large_is_named(client):
    many = json.dumps([[[1], [1]]] * 501)
    assert detail(post(client, "/v1/predict/batch", batch_body(many)), 413) == (
        "items[3].strokes: 501 strokes; at most 500"
    )


@pytest.mark.parametrize("seed", ["-1", str(2**64), BIG400])
def test_explore_seed_out_of_range_is_a_422(client, seed):
    """numpy's default_rng(-1) raised ValueError: a 500."""
    response = client.get("/v1/models/img/examples/random", params={"seed": seed})
    assert detail(response).startswith("query.seed: Input should be")
    ok = client.get("/v1/models/img/examples/random", params={"seed": 7})
    assert ok.status_code == 200 and ok.json()["label"] in [str(d) for d in range(10)]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/v1/feedback/review", '{"ids": ' + DEEP + ', "status": "new"}'),
        ("/v1/feedback/review", '{"ids": [' + BIG5000 + '], "status": "new"}'),
        ("/v1/feedback/delete", '{"ids": [' + BIG5000 + "]}"),
        ("/v1/admin/retrain", '{"epochs": ' + BIG5000 + "}"),
        ("/v1/admin/retrain", DEEP),
    ],
)
def test_admin_bodies_are_parsed_the_same_way(client, path, text):
    """Behind the token, FastAPI's parser answered 400 "There was an error parsing the body"."""
    assert detail(post(client, path, text, authorization="Bearer t")).startswith("body: ")


def test_nan_and_infinity_are_not_json(client):
    text = detail(post(client, "/v1/predict", predict_body("[[[NaN, 1], [1, 2]]]")))
    assert text == "body: NaN is not a JSON number"
    text = detail(post(client, "/v1/feedback", feedback_body("[[[1, 1e999], [1, 2]]]")))
    assert text == "input.strokes[0][0][1]: must be a finite number"


def test_every_route_with_a_body_parses_it_safely(app):
    """A route added later with a pydantic body must use SafeJSONRoute too."""
    from fastapi.routing import APIRoute

    from imgclass.serve.inputs import SafeJSONRoute

    def routes(found):  # FastAPI 0.165 includes routers lazily: look inside them too
        for r in found:
            inner = getattr(r, "original_router", None)
            yield from routes(inner.routes) if inner is not None else [r]

    all_routes = list(routes(app.routes))
    with_body = [r for r in all_routes if isinstance(r, APIRoute) and r.body_field is not None]
    # /v1/predict and /v1/predict/batch read their bodies themselves (on the work pool)
    # through parse_json_body; the other bodies are FastAPI's, and must go through ours
    assert {r.path for r in with_body} >= {"/v1/feedback"}
    assert [r.path for r in with_body if not isinstance(r, SafeJSONRoute)] == []


def test_keep_alive_connection_survives_hostile_inputs(app):
    """On a real uvicorn, a 500 from the generic handler closed the connection; now each
    hostile body gets its 422 and the same connection serves the next request."""
    hostile = [
        ("/v1/predict", predict_body(f"[[[{BIG400}], [1]]]")),
        ("/v1/predict", predict_body(f"[[[{BIG5000}], [1]]]")),
        ("/v1/predict", DEEP),
        ("/v1/predict/batch", batch_body("[[[[1,2]],[[3,4]]]]")),
        ("/v1/feedback", feedback_body(f"[[[{BIG400}], [1]]]")),
    ]
    with real_server(app) as (host, port):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.connect()
        sock = conn.sock
        for path, text in hostile:
            conn.request("POST", path, text, {"content-type": "application/json"})
            response = conn.getresponse()
            assert response.status == 422, (path, response.read()[:200])
            assert "detail" in json.loads(response.read())
            assert not response.will_close and conn.sock is sock, path
        conn.request(
            "POST",
            "/v1/predict",
            json.dumps({"strokes": GOOD}),
            {"content-type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["predictions"]
        assert conn.sock is sock
        conn.close()


def test_feedback_store_refuses_a_huge_integer(tmp_path):
    """The store's own check (used by the CLI's imports too) raised OverflowError."""
    from imgclass.errors import FeedbackError
    from imgclass.feedback.store import FeedbackStore

    store = FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3")
    try:
        with pytest.raises(FeedbackError, match="stroke 0: coordinates must be finite"):
            store.add(label="3", input_kind="strokes", strokes=[[[10**400], [1]]])
        assert store.count() == 0
    finally:
        store.close()


# -- the CLI ------------------------------------------------------------------------------

HOSTILE_LINES = {
    "nested 100,000 deep": '{"word": "cat", "drawing": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "a 5,000-digit integer": '{"word": "cat", "drawing": [[[' + BIG5000 + ", 2], [3, 4]]]}",
    "a 400-digit integer": '{"word": "cat", "drawing": [[[' + BIG400 + ", 2], [3, 4]]]}",
    "a boolean among numbers": '{"word": "cat", "drawing": [[[1, true], [3, 4]]]}',
}
REASONS = {
    "nested 100,000 deep": "nested deeper than 64 levels of arrays and objects",
    "a 5,000-digit integer": "a number at character 31 has more than 4300 digits",
    "a 400-digit integer": "drawing[0][0][0]: must be between -3.4e+38 and 3.4e+38",
    "a boolean among numbers": "drawing[0][0][1]: must be a number, not true",
}
GOOD_LINE = json.dumps({"word": "cat", "drawing": [[[0, 100, 255], [0, 200, 90]]]})


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory):
    return image_bundle(tmp_path_factory.mktemp("cli") / "img" / "bundle")


@pytest.mark.parametrize("case", HOSTILE_LINES)
def test_cli_predict_names_the_line_and_exits_2(capsys, tmp_path, cli_bundle, case):
    from imgclass.cli import main

    path = tmp_path / "drawings.ndjson"
    path.write_text(GOOD_LINE + "\n" + HOSTILE_LINES[case] + "\n")
    code = main(["-q", "predict", str(cli_bundle), str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [f"error: {path}, line 2: {REASONS[case]}"]
    assert [r["line"] for r in json.loads(out)["results"]] == [1]  # the good line


@pytest.mark.parametrize("case", HOSTILE_LINES)
def test_cli_data_prepare_names_the_line_and_exits_2(capsys, tmp_path, case):
    from imgclass.cli import main

    path = tmp_path / "cat.ndjson"
    path.write_text(GOOD_LINE + "\n" + HOSTILE_LINES[case] + "\n")
    out = tmp_path / "prepared"
    code = main(["-q", "data", "prepare", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [f"error: {path}, line 2: {REASONS[case]}"]
    assert not out.exists()


# -- siblings: other JSON and numbers from people -----------------------------------------


def test_legacy_feedback_rows_with_hostile_input_are_dropped_not_raised(tmp_path):
    """Converting a first-version feedback database ran json.loads on each row's input:
    a row nested 100,000 deep or with a 5,000-digit integer stopped the store opening."""
    import sqlite3

    from imgclass.feedback.store import FeedbackStore

    schema = """CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT
        NOT NULL, model TEXT, version TEXT, input_kind TEXT NOT NULL, input_json TEXT,
        image BLOB, content_hash TEXT NOT NULL UNIQUE, predicted TEXT, label TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'new', client_id TEXT);"""
    inputs = ["[[[1, 2], [3, 4]]]", "[" * 100_000 + "]" * 100_000, f"[[[{BIG5000}], [1]]]"]
    inputs.append(f"[[[{BIG400}], [1]]]")
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(schema)
        conn.executemany(
            "INSERT INTO feedback (created, input_kind, input_json, content_hash, label)"
            " VALUES ('2026-01-02T03:04:05Z', 'strokes', ?, ?, '1')",
            [(text, f"h{i}") for i, text in enumerate(inputs)],
        )
    with FeedbackStore.from_path_or_url(path) as store:
        assert store.count() == 1  # the good row; the others had no usable input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epochs=" + BIG5000], "--set value '1111"),
        (["--set", "epochs=" + "[" * 3000], "--set value '[[[["),
        (["--config", "deep.yaml"], "deep.yaml: nested too deep"),
        (["--config", "big.yaml"], "big.yaml: a number has more than 4300 digits"),
    ],
)
def test_train_settings_with_hostile_values_are_one_line(
    capsys, tmp_path, digits_dir, args, message
):
    """yaml.safe_load raised RecursionError or ValueError: a traceback."""
    from imgclass.cli import main

    (tmp_path / "deep.yaml").write_text("epochs: " + "[" * 3000 + "]" * 3000 + "\n")
    (tmp_path / "big.yaml").write_text("epochs: " + BIG5000 + "\n")
    args = [str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", str(digits_dir), "--out", str(out), *args])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"size": [' + BIG5000 + "]}"])
def test_a_hostile_recipe_file_is_one_line(capsys, tmp_path, text):
    """``data prepare --recipe x.json`` ran json.loads on it: a traceback."""
    from imgclass.cli import main

    recipe = tmp_path / "recipe.json"
    recipe.write_text(text)
    out = tmp_path / "out"
    code = main(["-q", "data", "prepare", "--builtin", "digits", "--recipe", str(recipe),
                 "--per-class", "2", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --recipe {recipe}: cannot read it (") and not out.exists()
