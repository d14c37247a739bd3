"""Guesses computed in the page (static/prep.js + static/infer.js + onnxruntime-web) in a
real Chromium against a real uvicorn server on 127.0.0.1: parity with the server's own
path on real held-out drawings, guesses without the server, stale answers dropped."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from imgclass.bundle import load_bundle
from imgclass.serve.app import STATIC, create_app
from imgclass.serve.browser import BROWSER_OPS
from imgclass.serve.predictor import Predictor
from imgclass.serve.settings import ServeSettings
from imgclass.testing import LocalServer
from imgclass.testing import draw_strokes as draw

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
needs_chromium = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed"
)
TRAIN_PER_CLASS = 20  # drawings 0..19 of each category train the model; the rest are held out
N_PARITY = 120
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="module")
def doodle_bundle(tmp_path_factory):
    """cnn-small trained briefly on the first 20 built-in doodles of each of 20 classes."""
    from imgclass.cli import main

    root = tmp_path_factory.mktemp("doodles")
    data = root / "data"
    prepare = ["-q", "data", "prepare", "--builtin", "doodles"]
    assert main([*prepare, "--per-class", str(TRAIN_PER_CLASS), "--out", str(data)]) == 0
    train = ["-q", "train", "--data", str(data), "--model", "cnn-small", "--epochs", "3"]
    assert main([*train, "--out", str(root / "doodles"), "--set", "lr=3e-3"]) == 0
    return root / "doodles" / "bundle"


def held_out_drawings(shared_data: Path, labels: list[str], n: int) -> list[list]:
    """Raw drawings (canvas coordinates, floats, with times) of the model's classes that
    it never saw: drawing k of a category is bitmap k, and only k < TRAIN_PER_CLASS were
    prepared. Taken round-robin over the classes."""
    seen: dict[str, int] = {}
    by_class: dict[str, list] = {c: [] for c in labels}
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        for line in f:
            d = json.loads(line)
            if d["word"] in by_class:
                k = seen[d["word"]] = seen.get(d["word"], -1) + 1
                if k >= TRAIN_PER_CLASS:
                    by_class[d["word"]].append(d["drawing"])
    out: list[list] = []
    while len(out) < n and any(by_class.values()):
        for c in labels:
            if by_class[c] and len(out) < n:
                out.append(by_class[c].pop(0))
    return out


def as_page_sends(drawing: list) -> list:
    """x, y rounded as the page rounds them (Math.round: halves up), times kept."""
    return [
        [[int(np.floor(v + 0.5)) for v in s[0]], [int(np.floor(v + 0.5)) for v in s[1]], s[2]]
        for s in drawing
    ]


def as_arrays(drawing: list) -> list[np.ndarray]:
    """A drawing as the server parses it: float32 (n_points, 3) per stroke."""
    return [np.asarray(s, dtype=np.float32).T for s in drawing]


def serve(bundle: Path, db: Path) -> LocalServer:
    """uvicorn on 127.0.0.1 in a thread, stoppable from the test."""
    return LocalServer(create_app(ServeSettings(models=[str(bundle)], feedback_db=db)))


@pytest.fixture(scope="module")
def server(doodle_bundle, tmp_path_factory):
    srv = serve(doodle_bundle, tmp_path_factory.mktemp("fb") / "feedback.sqlite3")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, bypass_csp: bool = True, before=None):
    context = browser.new_context(viewport={"width": 900, "height": 800}, bypass_csp=bypass_csp)
    page = context.new_page()
    if before:
        before(page)
    page.goto(url + "/")
    return context, page


def engine(page) -> dict:
    return page.evaluate(
        "window.imgclassEngine.whenReady.then((e) => ({where: e.where, reason: e.reason}))"
    )


HOUSE = [
    [(60, 140), (60, 250), (220, 250), (220, 140), (60, 140)],
    [(50, 150), (140, 50), (230, 150)],
]


# --- the page's parts, without a browser ---------------------------------------------
def test_the_browser_ops_are_those_prep_js_ports():
    """serve/browser.py decides which models the page may run by the ops prep.js ports."""
    text = (STATIC / "prep.js").read_text()
    block = text[text.index("const OPS = {") : text.index("};", text.index("const OPS = {"))]
    assert set(re.findall(r"^\s{4}(\w+):", block, flags=re.M)) == set(BROWSER_OPS)


def test_the_model_file_is_served_with_its_sha256_as_etag(digits_bundle, tmp_path):
    client = TestClient(
        create_app(ServeSettings(models=[str(digits_bundle)], feedback_db=tmp_path / "f.db"))
    )
    info = client.get("/v1/models").json()["models"][0]
    browser_part = info["browser"]
    assert browser_part["refusal"] is None and browser_part["recipe"]["name"] == "mnist"
    r = client.get(browser_part["model_url"])
    assert r.status_code == 200 and r.content == (digits_bundle / "model.onnx").read_bytes()
    assert (
        r.headers["etag"] == f'"{browser_part["sha256"]}"'
        and r.headers["content-type"] == "application/octet-stream"
    )
    again = client.get(browser_part["model_url"], headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/v1/models/nope/model.onnx").status_code == 404


def test_onnxruntime_web_is_served_as_wasm_under_a_strict_policy(digits_bundle, tmp_path):
    client = TestClient(
        create_app(ServeSettings(models=[str(digits_bundle)], feedback_db=tmp_path / "f.db"))
    )
    wasm = client.get("/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    glue = client.get("/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs")
    assert glue.headers["content-type"].startswith("text/javascript")
    policy = client.get("/").headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in policy
    assert "'unsafe-eval'" not in policy.replace("'wasm-unsafe-eval'", "") and "http" not in policy


# --- in Chromium ------------------------------------------------------------------------
# a guess on the line, sure ("I see… x") or hedged ("maybe x?", under the server's hedge_below)
GUESS_SHOWN = "/^(I see… |maybe )/.test(document.getElementById('guess-line').textContent)"


@needs_chromium
def test_the_page_prepares_and_guesses_held_out_drawings_as_the_server_does(
    browser, server, doodle_bundle, shared_data
):
    """≥ 100 real held-out drawings through prep.js + onnxruntime-web in Chromium and
    through Bundle.model_input + ONNX Runtime: identical model inputs (no tolerance),
    the same top-1 on ≥ 99% (float rounding in the two runtimes may part near-ties)."""
    bundle = load_bundle(doodle_bundle)
    drawings = held_out_drawings(shared_data, bundle.labels, N_PARITY)
    assert len(drawings) >= 100
    context, page = open_page(browser, server.url, bypass_csp=False)  # the real policy
    assert engine(page) == {"where": "browser", "reason": None}
    sent = [as_page_sends(d) for d in drawings]
    recipe, spec = bundle.recipe, bundle.preprocess["input"]
    js = page.evaluate(
        """async ([raw, sent, recipe, spec]) => {
            const out = [];
            for (let i = 0; i < raw.length; i++) {
                const r = await window.imgclassGuess(sent[i], {topK: 1});
                out.push({raw: Array.from(imgclassPrep.modelInput(raw[i], recipe, spec).image.d),
                          sent: Array.from(imgclassPrep.modelInput(sent[i], recipe, spec).image.d),
                          top: r.top[0].label, where: r.where});
            }
            return out;
        }""",
        [drawings, sent, recipe, spec],
    )
    context.close()
    expected_raw = bundle.model_input([as_arrays(d) for d in drawings])
    expected_sent = bundle.model_input([as_arrays(d) for d in sent])
    got_raw = np.array([j["raw"] for j in js], dtype=np.uint8).reshape(expected_raw.shape)
    got_sent = np.array([j["sent"] for j in js], dtype=np.uint8).reshape(expected_sent.shape)
    np.testing.assert_array_equal(got_raw, expected_raw)
    np.testing.assert_array_equal(got_sent, expected_sent)
    assert {j["where"] for j in js} == {"browser"}
    server_top = [bundle.labels[i] for i in bundle.predict_proba(expected_sent).argmax(axis=1)]
    agree = np.mean([j["top"] == t for j, t in zip(js, server_top, strict=True)])
    assert agree >= 0.99, f"top-1 agrees on {agree:.1%} of {len(js)} drawings"


@needs_chromium
def test_guesses_keep_coming_when_the_server_is_gone(browser, doodle_bundle, tmp_path):
    srv = serve(doodle_bundle, tmp_path / "feedback.sqlite3")
    context, page = open_page(browser, srv.url)
    try:
        assert engine(page)["where"] == "browser"
        srv.stop()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(srv.url + "/healthz", timeout=2)
        draw(page, HOUSE)
        page.wait_for_function(GUESS_SHOWN)
        assert page.locator("#guesses li").count() == 3
        assert page.locator("#guess-where").text_content() == "computed in your browser"
        page.click("#clear")
        draw(page, HOUSE[:1])  # and again, for a new drawing
        page.wait_for_function(GUESS_SHOWN)
    finally:
        context.close()
        srv.stop()


GUESS_LOG = "window.__guesses = []; document.addEventListener('imgclass:guess', (e) => __guesses.push(e.detail))"


def stroke_moves(page, n: int, pause_ms: int = 20) -> None:
    """One stroke of ``n`` mouse moves, ``pause_ms`` apart."""
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for i in range(1, n + 1):
        page.mouse.move(box["x"] + 40 + 9 * i, box["y"] + 40 + 5 * i)
        page.wait_for_timeout(pause_ms)


@needs_chromium
def test_guesses_update_while_the_pointer_moves(browser, server):
    """Not only at the end of a stroke: with the model idle, every move gets its own
    guess, computed in the page (on its own thread, the runtime compiled in a worker)."""
    context, page = open_page(browser, server.url)
    try:
        assert engine(page)["where"] == "browser"
        assert page.evaluate("[window.imgclassEngine.compiled, ort.env.wasm.proxy]") == [
            "worker",
            False,
        ]
        page.evaluate(GUESS_LOG)
        stroke_moves(page, 20)
        got = page.evaluate("__guesses.map((g) => [g.version, g.where])")
        page.mouse.up()
        versions = [v for v, _ in got]
        assert {w for _, w in got} == {"browser"}
        assert versions == sorted(set(versions)), "answers out of order or repeated"
        # the down and 20 moves are versions 1..21; a busy moment may skip one or two
        assert len(versions) >= 18 and versions[-1] == 21, versions
    finally:
        context.close()


@needs_chromium
def test_a_busy_model_skips_moves_and_ends_on_the_latest(browser, server):
    """A model slower than the pointer: moves that come while it runs are not queued up
    (no answer older than one shown, fewer guesses than moves), and the last guess is
    for the drawing as it ended."""
    context, page = open_page(browser, server.url)
    try:
        assert engine(page)["where"] == "browser"
        page.evaluate(
            "const guess = window.imgclassGuess; window.imgclassGuess = (s, o) =>"
            " new Promise((r) => setTimeout(r, 150)).then(() => guess(s, o)); 0"
        )
        page.evaluate(GUESS_LOG)
        stroke_moves(page, 15)
        page.mouse.up()
        page.wait_for_timeout(600)
        versions = page.evaluate("__guesses.map((g) => g.version)")
        assert versions == sorted(set(versions)), versions
        assert 2 <= len(versions) < 10 and versions[-1] == 16, versions
        # and an answer that comes after Clear is dropped on this path too
        stroke_moves(page, 3)
        page.mouse.up()  # its guess is still running: Clear now, then nothing may show
        page.evaluate("window.__guesses = []; document.getElementById('clear').click()")
        page.wait_for_timeout(600)
        assert page.evaluate("__guesses.length") == 0
        assert page.locator("#guess-line").text_content() == "Draw something…"
    finally:
        context.close()


@needs_chromium
def test_raw_pointer_updates_record_the_same_drawing_as_pointermove(browser, server):
    """The page takes moves from pointerrawupdate (not held for the next frame); drawn
    the same way, it records the same points as the pointermove path (?pointer-raw=0)."""
    sent = []
    for query in ("", "?pointer-raw=0"):
        context = browser.new_context(viewport={"width": 900, "height": 800})
        page = context.new_page()
        page.add_init_script(
            "window.__raw = 0; addEventListener('pointerrawupdate', () => __raw++, true)"
        )
        page.goto(server.url + "/" + query)
        try:
            engine(page)
            draw(page, HOUSE)
            page.wait_for_function(GUESS_SHOWN)
            assert page.evaluate("__raw") > 0
            with page.expect_request("**/v1/feedback") as request:
                page.click("#right")
            strokes = json.loads(request.value.post_data)["input"]["strokes"]
            sent.append([s[:2] for s in strokes])
        finally:
            context.close()
    assert sent[0] == sent[1] and len(sent[0]) == 2


@needs_chromium
def test_the_page_compiles_the_runtime_itself_when_the_worker_fails(browser, server):
    """No compile worker (blocked here): the page compiles onnxruntime-web's WebAssembly
    itself, as before, and still guesses in the browser."""

    def no_worker(page):
        page.route("**/static/compile-worker.js", lambda route: route.abort())

    context, page = open_page(browser, server.url, before=no_worker)
    try:
        assert engine(page) == {"where": "browser", "reason": None}
        assert page.evaluate("window.imgclassEngine.compiled") == "page"
        draw(page, HOUSE)
        page.wait_for_function(GUESS_SHOWN)
        assert page.locator("#guess-where").text_content() == "computed in your browser"
    finally:
        context.close()


@needs_chromium
def test_an_answer_for_a_cleared_drawing_is_dropped(browser, server):
    """Slow server answers (the page on its server path): the answer for a drawing that
    was cleared never shows, and Right! sends the strokes of the drawing on screen."""

    def slow_server_path(page):
        page.route(
            "**/model.onnx", lambda route: route.abort()
        )  # the page falls back to the server

        def slow(route):
            time.sleep(1.0)
            route.continue_()

        page.route("**/v1/predict**", slow)

    context, page = open_page(browser, server.url, before=slow_server_path)
    try:
        assert engine(page)["where"] == "server"
        draw(page, HOUSE)
        page.click("#clear")
        page.wait_for_timeout(2500)  # the answer for the house has come back by now
        assert page.locator("#guess-line").text_content() == "Draw something…"
        assert page.locator("#guesses li").count() == 0
        assert page.locator("#feedback").is_hidden()
        # a new drawing, then Right!: it sends this drawing's strokes, never the house's
        line = [[(40, 200), (240, 200)]]
        draw(page, line)
        page.wait_for_function(GUESS_SHOWN, timeout=10000)
        with page.expect_request("**/v1/feedback") as sent:
            page.click("#right")
        body = json.loads(sent.value.post_data)
        assert len(body["input"]["strokes"]) == 1
        xs = body["input"]["strokes"][0][0]
        assert min(xs) <= 45 and max(xs) >= 235
    finally:
        context.close()


@needs_chromium
def test_the_page_takes_up_a_new_model_version(browser, server, digits_bundle):
    """A promoted or reloaded model: the page notices its new version and runs it."""
    context, page = open_page(browser, server.url)
    state = server.app.state.imgclass
    before = next(iter(state.predictors.values()))
    try:
        assert engine(page)["where"] == "browser"
        digits = Predictor(digits_bundle)
        digits.name = before.name  # the same model name, a new version
        state.swap(digits)
        page.evaluate("window.imgclassEngine.check()")
        info = page.evaluate(
            "window.imgclassEngine.whenReady.then((e) => ({model: e.model, where: e.where, classes: e.info.classes}))"
        )
        assert info["model"] == digits.version and info["where"] == "browser"
        assert info["classes"] == digits.bundle.labels
    finally:
        state.swap(before)
        context.close()


@needs_chromium
def test_an_int8_bundle_runs_in_the_page_too(browser, doodle_bundle, shared_data, tmp_path):
    """onnxruntime-web runs our int8 (QDQ) models: the page uses them, same top-1."""
    from imgclass.cli import main

    int8 = tmp_path / "bundle-int8"
    data = doodle_bundle.parent.parent / "data"
    quantize = ["-q", "quantize", str(doodle_bundle), "--data", str(data)]
    assert main([*quantize, "--out", str(int8), "--force"]) == 0
    bundle = load_bundle(int8)
    drawings = [as_page_sends(d) for d in held_out_drawings(shared_data, bundle.labels, 40)]
    srv = serve(int8, tmp_path / "feedback.sqlite3")
    context, page = open_page(browser, srv.url)
    try:
        assert engine(page) == {"where": "browser", "reason": None}
        js = page.evaluate(
            "async (ds) => { const out = []; for (const d of ds)"
            " out.push((await window.imgclassGuess(d, {topK: 1})).top[0].label); return out; }",
            drawings,
        )
    finally:
        context.close()
        srv.stop()
    proba = bundle.predict_proba(bundle.model_input([as_arrays(d) for d in drawings]))
    top = [bundle.labels[i] for i in proba.argmax(axis=1)]
    agree = np.mean([j == t for j, t in zip(js, top, strict=True)])
    assert agree >= 0.95, f"top-1 agrees on {agree:.0%}"
