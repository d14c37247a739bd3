"""Property-based fuzzing of the public JSON endpoints with hostile values, not only what
the OpenAPI schema describes: strokes nested wrongly at any level, numbers of every
kind (integers of hundreds or thousands of digits, 1e400, NaN, Infinity, booleans,
strings, null), and bodies nested thousands deep. Whatever arrives, the answer is never
a 5xx: a 2xx, or a 4xx JSON with a ``detail`` for people.

The example counts are small for CI (deterministic, a few seconds a test); set
``FUZZ_EXAMPLES=2000`` (and ``FUZZ_RANDOM=1`` for fresh examples) to fuzz longer.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inputs_support import Nest, Raw, image_bundle, sequence_bundle, to_json

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client(tmp_path_factory, digits_dir):
    from fastapi.testclient import TestClient

    from imgclass.serve.app import create_app
    from imgclass.serve.settings import ServeSettings

    root = tmp_path_factory.mktemp("fuzz-inputs")
    models = [image_bundle(root / "img" / "bundle", digits_dir), sequence_bundle(root / "seq")]
    app = create_app(
        ServeSettings(models=[str(m) for m in models], feedback_db=root / "fb.sqlite3")
    )
    # an exception in the app fails the test with its own type and place, so that
    # Hypothesis tells distinct bugs apart
    with TestClient(app) as c:
        yield c


# -- strategies ---------------------------------------------------------------------------

DIGITS_TEXT = st.integers(300, 6000).map(lambda n: "9" * n)
numbers = st.one_of(
    st.integers(-300, 300),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN and +-Infinity as JSON constants
    st.integers(-(10**400), 10**400),  # hundreds of digits: float() overflows
    DIGITS_TEXT.map(Raw),  # thousands of digits: more than int() reads
    st.sampled_from(["1e400", "-1e999", "1E+2", "-0", "0.0000001", "4e38"]).map(Raw),
)
junk = st.one_of(st.booleans(), st.none(), st.text(max_size=4), st.just({}), st.just({"x": [1]}))
# deep nesting: a few levels (a wrong shape) or thousands (past the recursion limit)
depths = st.one_of(st.integers(1, 3), st.integers(30, 6000))


def maybe_nested(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``s`` itself, sometimes ``s`` inside lists a few or thousands deep."""
    return st.one_of(s, s, s, st.builds(Nest, s, depths))


values = maybe_nested(st.one_of(numbers, numbers, numbers, junk))
columns = maybe_nested(st.lists(values, max_size=5))
strokes_hostile = maybe_nested(st.lists(maybe_nested(st.lists(columns, max_size=4)), max_size=4))


# what a drawing may hold: odd but acceptable drawings reach the models (one point, all
# points equal, extents of a million, negative, fractions)
in_range = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6),
    st.sampled_from([0, 0.5, -1, 255, 10**6, -(10**6)]),
)


@st.composite
def strokes_valid(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> list[Any]:
    """Well-formed strokes: 2 or 3 equal-length lists of ``values``."""
    dims = draw(st.sampled_from([2, 3]))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 6))
        out.append([draw(st.lists(values, min_size=n, max_size=n)) for _ in range(dims)])
    return out


def one_level_deeper(drawing: list[Any]) -> st.SearchStrategy[Any]:
    """The drawing with every value, every stroke, or the whole inside one more list:
    regular shapes that numpy takes for arrays of a higher rank."""
    return st.sampled_from(
        [
            [[[[v] for v in column] for column in stroke] for stroke in drawing],
            [[stroke] for stroke in drawing],
            [drawing],
        ]
    )


strokes = st.one_of(
    strokes_valid(in_range),
    strokes_valid(numbers),
    strokes_valid(st.one_of(in_range, in_range, junk)),  # a wrong value here and there
    strokes_valid(in_range).flatmap(one_level_deeper),
    strokes_hostile,
    junk,
)


def post(client: Any, path: str, body: Any) -> Any:
    text = body.text if isinstance(body, Raw) else to_json(body)
    return client.post(path, content=text, headers={"content-type": "application/json"})


def assert_handled(response: Any) -> None:
    """A 2xx, or a 4xx with JSON ``detail`` text: never a server error."""
    sent = response.request.content[:200]
    assert response.status_code < 500, f"{sent!r} -> {response.text[:300]}"
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail


# -- tests --------------------------------------------------------------------------------


@FUZZ
@given(strokes=strokes, model=st.sampled_from(["img", "seq"]))
def test_predict_strokes_never_fail_the_server(client, strokes, model):
    assert_handled(post(client, f"/v1/predict?model={model}", {"strokes": strokes}))


@FUZZ
@given(strokes=strokes)
def test_predict_and_feedback_accept_the_same_strokes(client, strokes):
    """One schema: the drawing /v1/predict accepts is the drawing /v1/feedback stores."""
    predicted = post(client, "/v1/predict?model=img", {"strokes": strokes})
    stored = post(client, "/v1/feedback", {"input": {"strokes": strokes}, "label": "3"})
    assert_handled(predicted)
    assert_handled(stored)
    assert predicted.status_code == stored.status_code, (predicted.text, stored.text)


@FUZZ
@given(
    items=st.lists(st.fixed_dictionaries({"strokes": strokes}), min_size=1, max_size=4),
    model=st.sampled_from(["img", "seq"]),
)
def test_batch_never_fails_the_server_and_names_the_item(client, items, model):
    response = post(client, f"/v1/predict/batch?model={model}", {"items": items})
    assert_handled(response)
    if response.status_code == 422:  # the body as a whole, or the item at fault
        assert response.json()["detail"].startswith(("body: ", "items")), response.text[:300]


@FUZZ
@given(strokes=strokes, probability=st.one_of(numbers, junk), label=st.one_of(st.text(), junk))
def test_feedback_never_fails_the_server(client, strokes, probability, label):
    body = {
        "input": {"strokes": strokes},
        "label": label,
        "predicted": [{"label": "3", "probability": probability}],
    }
    assert_handled(post(client, "/v1/feedback", body))


bodies = st.one_of(
    depths.map(lambda d: Raw("[" * d + "]" * d)),
    depths.map(lambda d: Raw('{"a":' * d + "1" + "}" * d)),
    depths.map(lambda d: {"strokes": Nest([], d)}),
    depths.map(lambda d: {"items": [{"strokes": Nest([1], d)}]}),
    depths.map(lambda d: {"input": {"strokes": Nest(0, d)}, "label": "3"}),
    depths.map(lambda d: {"ids": Nest(1, d), "status": "new"}),
    DIGITS_TEXT.map(lambda t: Raw('{"strokes": [[[1], [' + t + "]]]}")),
    DIGITS_TEXT.map(lambda t: Raw('{"items": [{"strokes": [[[1], [' + t + "]]]}]}")),
    DIGITS_TEXT.map(lambda t: Raw('{"input": {"strokes": [[[1], [' + t + ']]]}, "label": "3"}')),
    st.sampled_from(["NaN", "[NaN]", '{"strokes": [[[NaN], [1]]]}', '"\\ud800"', "{", "1e999"]).map(
        Raw
    ),
)
PUBLIC_POSTS = ["/v1/predict", "/v1/predict/batch", "/v1/feedback"]


@FUZZ
@given(body=bodies, path=st.sampled_from(PUBLIC_POSTS))
def test_any_body_on_any_public_post_is_answered(client, body, path):
    assert_handled(post(client, path, body))


@FUZZ
@given(
    seed=st.one_of(
        st.integers(-(2**70), 2**70).map(str), DIGITS_TEXT, st.text(max_size=8), st.just("-1")
    )
)
def test_explore_seed_never_fails_the_server(client, seed):
    assert_handled(client.get("/v1/models/img/examples/random", params={"seed": seed}))
