"""Security details of the server (issue 10): security headers and the page's CSP, the
Authorization scheme, labels people may teach (normalised, visible, capped), and the
route labels of /metrics. Real app, real SQLite, FastAPI's in-process client."""

from __future__ import annotations

import pytest
from durable_support import STROKES, digits_bundle
from fastapi.testclient import TestClient

from imgclass.errors import FeedbackError
from imgclass.feedback.store import FeedbackStore
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return digits_bundle(tmp_path_factory.mktemp("security") / "bundle")


def make_client(bundle, tmp_path, **settings):
    values = {"models": [str(bundle)], "feedback_db": tmp_path / "fb.sqlite3",
              "admin_token": TOKEN, "max_body_bytes": 10_000, **settings}  # fmt: skip
    return TestClient(create_app(ServeSettings(**values)))


@pytest.fixture
def client(bundle, tmp_path):
    with make_client(bundle, tmp_path) as c:
        yield c


@pytest.fixture
def open_client(bundle, tmp_path):
    """New labels allowed, at most 4 in all and 2 per client id."""
    with make_client(bundle, tmp_path, feedback_allow_new_labels=True,
                     feedback_max_new_labels=4, feedback_max_new_labels_per_client=2) as c:  # fmt: skip
        yield c


def post(client, label, k=0, client_id=None):
    strokes = [[[10 + k, 60, 120], [20, 90, 200]]]
    body = {"input": {"strokes": strokes}, "label": label, "client_id": client_id}
    return client.post("/v1/feedback", json=body)


# --- headers -----------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client):
    responses = [
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/v1/models"),
        client.get("/no-such-page"),
        client.post("/v1/predict", content=b"x" * 10_001),  # refused by the limits
        client.get("/v1/feedback"),  # 401
    ]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        policy = r.headers["content-security-policy"]
        assert (
            "script-src 'self' 'wasm-unsafe-eval';" in policy and "frame-ancestors 'none'" in policy
        )
        assert "'unsafe-" not in policy  # no unsafe-inline or unsafe-eval (wasm only)


def test_the_page_has_no_inline_script_or_handler(client):
    import re

    html = client.get("/").text
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script has a src
    assert re.findall(r"\son[a-z]+\s*=", html) == [] and "javascript:" not in html
    assert " style=" not in html and " style=" not in client.get("/static/app.js").text


def test_the_api_docs_load_nothing_from_another_origin(client):
    """/docs and /redoc run Swagger UI and ReDoc from the package's own copies: their
    policy names no other origin, and Swagger UI's inline start-up script is allowed by
    its hash, not by 'unsafe-inline' (the pages render offline: tests/serve/test_page_edges.py)."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = client.get(path)
        policy = r.headers["content-security-policy"]
        assert r.status_code == 200 and "http" not in policy and "cdn" not in r.text
        script = policy.split("script-src ")[1].split(";")[0]
        assert "'unsafe-inline'" not in script and ("'sha256-" in script) == (path != "/redoc")
        assert "frame-ancestors 'none'" in policy and r.headers["x-frame-options"] == "DENY"


# --- Authorization -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [TOKEN, f"Basic {TOKEN}", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer{TOKEN}", ""],
)
def test_admin_needs_the_bearer_scheme_and_the_token(client, header):
    for path in ("/v1/feedback", "/v1/feedback/stats", "/v1/admin/retrain"):
        r = client.get(path, headers={"Authorization": header} if header else {})
        assert r.status_code == 401, (path, header)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in r.json()["detail"]
    assert client.post("/v1/admin/reload", headers={"Authorization": TOKEN}).status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_case_insensitive(client, scheme):
    r = client.get("/v1/feedback/stats", headers={"Authorization": f"{scheme}  {TOKEN}"})
    assert r.status_code == 200, r.text


# --- labels ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, named",
    [
        ("\u3164", "U+3164 HANGUL FILLER"),
        ("\uffa0", "U+FFA0 HALFWIDTH HANGUL FILLER"),
        ("\u115f", "U+115F"),
        ("cat\u200b", "U+200B ZERO WIDTH SPACE"),
        ("c\u200dat", "U+200D"),
        ("\u2060dog", "U+2060"),
        ("\ufeffcow", "U+FEFF"),
        ("\u2800", "U+2800"),
        ("bell\x07", "control character"),
        ("rtl\u202egnp", "U+202E"),
        ("\u3000", "empty or blank"),  # ideographic space: NFKC gives " "
    ],
)
def test_invisible_and_control_characters_are_refused(open_client, label, named):
    r = post(open_client, label)
    assert r.status_code == 422 and named in r.json()["detail"], r.text
    assert open_client.app.state.imgclass.feedback.count() == 0


def test_labels_are_nfkc_normalised(open_client):
    store = open_client.app.state.imgclass.feedback
    digit = post(open_client, "\uff13").json()  # full-width 3: the model's "3"
    word = post(open_client, "\uff43\uff41\uff54", k=1).json()  # full-width "cat"
    assert store.get(digit["id"])["label"] == "3" and store.get(word["id"])["label"] == "cat"
    assert post(open_client, "cat", k=1).json() == {"id": word["id"], "duplicate": True}


def test_unknown_labels_stay_refused_when_new_labels_are_off(client):
    r = post(client, "\u3164")
    assert r.status_code == 422 and "unknown label" in r.json()["detail"]
    assert post(client, "\uff17").status_code == 200  # full-width 7 is the model's "7"


def test_new_labels_are_capped_per_server_and_per_client(open_client):
    ok = [post(open_client, name, k=i, client_id=who) for i, (name, who) in
          enumerate([("ant", "a"), ("bee", "a"), ("cow", "b"), ("dog", None)])]  # fmt: skip
    assert [r.status_code for r in ok] == [200] * 4
    third = post(open_client, "eel", k=10, client_id="a")  # a's third new label
    assert third.status_code == 429 and "new label" in third.json()["detail"]
    assert post(open_client, "bee", k=11, client_id="a").status_code == 200  # one a has
    assert post(open_client, "cow", k=12, client_id="a").status_code == 429  # b's, not a's
    full = post(open_client, "fox", k=13)  # a fifth new label for the server
    assert full.status_code == 429 and "this server" in full.json()["detail"]
    assert post(open_client, "ant", k=14).status_code == 200  # labels in use still are
    assert post(open_client, "7", k=15, client_id="a").status_code == 200  # known labels too
    rejected = open_client.app.state.imgclass.feedback.list(label="dog")[0]["id"]
    review = {"ids": [rejected], "status": "rejected"}
    assert open_client.post("/v1/feedback/review", json=review, headers=ADMIN).status_code == 200
    assert post(open_client, "fox", k=16).status_code == 200  # a rejected label frees a place
    labels = open_client.get("/v1/feedback/stats", headers=ADMIN).json()["label"]
    assert sorted(labels) == ["7", "ant", "bee", "cow", "dog", "fox"]


def test_the_store_refuses_invisible_labels_from_any_caller(tmp_path):
    with FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3") as store:
        with pytest.raises(FeedbackError, match=r"U\+3164 HANGUL FILLER"):
            store.add(label="\u3164", input_kind="strokes", strokes=STROKES)
        assert store.count() == 0


# --- /metrics ----------------------------------------------------------------------------


def test_metrics_label_requests_by_their_route_template(client):
    client.get("/v1/feedback", headers=ADMIN)
    client.get("/v1/feedback/123", headers=ADMIN)
    client.get("/static/app.js")
    client.get("/static/no-such-file.js")
    client.get("/docs")
    client.get("/no-such-page")
    text = client.get("/metrics").text
    for route, status in [("/v1/feedback", 200), ("/v1/feedback/{id}", 404),
                          ("/static", 200), ("/static", 404), ("/docs", 200),
                          ("unmatched", 404)]:  # fmt: skip
        assert f'method="GET",route="{route}",status="{status}"' in text, route
    assert 'route="/feedback"' not in text and "/v1/feedback/123" not in text
