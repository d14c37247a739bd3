"""The Play tab in a real browser (Debian's Chromium, headless, Playwright) against a
real uvicorn server with a real sketch model: real Quick, Draw! drawings of the prompted
words are drawn stroke by stroke, the model recognises them, and every round lands in
the feedback store as a game round with its prompt and timing."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from imgclass.cli import main
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from imgclass.testing import LocalServer, draw_strokes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed"
)
sync_api = pytest.importorskip("playwright.sync_api")

WORDS = ["sun", "cup", "star", "fish", "apple", "umbrella"]
TOKEN = "game-review-token"
# drawings the model calls right this surely on the server are drawn: well above the
# game's win threshold (0.5), and reachable by calibrated probabilities (model.onnx
# divides the logits by the fitted temperature, so a small model is rarely 90% sure)
SURE = 0.7


@pytest.fixture(scope="module")
def doodle_bundle(tmp_path_factory):
    """cnn-small trained briefly (one thread) on the built-in real doodles of six words."""
    root = tmp_path_factory.mktemp("game")
    data, run = root / "doodles", root / "run"
    prepare = ["-q", "data", "prepare", "--builtin", "doodles", "--categories", ",".join(WORDS)]
    assert main([*prepare, "--out", str(data)]) == 0
    train = ["-q", "train", "--data", str(data), "--model", "cnn-small", "--out", str(run)]
    assert main([*train, "--epochs", "10", "--set", "lr=3e-3", "--set", "num_threads=1"]) == 0
    return run / "bundle"


@pytest.fixture(scope="module")
def server(doodle_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("fb") / "feedback.sqlite3"
    settings = ServeSettings(models=[str(doodle_bundle)], feedback_db=db, admin_token=TOKEN)
    with LocalServer(create_app(settings)) as srv:
        yield srv.url, db


def predict(url: str, strokes) -> list[dict]:
    """The served model's guesses for a drawing, best first, every class."""
    request = urllib.request.Request(
        url + f"/v1/predict?top_k={len(WORDS)}",
        json.dumps({"strokes": strokes}).encode(),
        {"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"]


@pytest.fixture(scope="module")
def drawings(shared_data, server):
    """For each word, up to four real raw Quick, Draw! drawings that the served model
    recognises surely."""
    found: dict[str, list] = {w: [] for w in WORDS}
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        for line in f:
            record = json.loads(line)
            word = record["word"]
            if word in WORDS and len(found[word]) < 4:
                guess = predict(server[0], record["drawing"])[0]
                if guess["label"] == word and guess["probability"] >= SURE:
                    found[word].append(record["drawing"])
            if all(len(v) == 4 for v in found.values()):
                break
    assert all(found.values())
    return found


def never_taken_for(url: str, word: str, drawings) -> list:
    """A drawing of another word that the model never takes for ``word``, at any stroke
    (so the round is surely lost)."""
    for other, candidates in drawings.items():
        for raw in candidates if other != word else []:
            prefixes = [predict(url, raw[:k]) for k in range(1, len(raw) + 1)]
            if all(next(g for g in p if g["label"] == word)["probability"] < 0.1 for p in prefixes):
                return raw
    pytest.fail(f"no drawing of another word is safely far from {word}")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_play(browser, url, **context_args):
    """The page under its real Content-Security-Policy, on the Play tab."""
    context = browser.new_context(**context_args)
    page = context.new_page()
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(url)
    page.wait_for_selector("#model-line:has-text('cnn-small')")
    page.click("#tab-play")
    return context, page


def canvas_strokes(raw, size: float, margin: float = 0.08):
    """A raw drawing's points moved into a square of ``size`` CSS pixels (a few per
    stroke dropped, so a drawing takes about a second to draw)."""
    xs = [x for s in raw for x in s[0]]
    ys = [y for s in raw for y in s[1]]
    side = max(max(xs) - min(xs), max(ys) - min(ys), 1)
    scale = size * (1 - 2 * margin) / side
    out = []
    for s in raw:
        step = max(1, len(s[0]) // 25)
        points = list(zip(s[0], s[1], strict=True))
        kept = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
        out.append(
            [(size * margin + (x - min(xs)) * scale, size * margin + (y - min(ys)) * scale)
             for x, y in kept]
        )  # fmt: skip
    return out


def draw(page, raw, canvas="#play-canvas"):
    """A raw Quick, Draw! drawing fitted to ``canvas``, drawn with real mouse moves."""
    box = page.locator(canvas).bounding_box()
    draw_strokes(page, canvas_strokes(raw, box["width"]), canvas=canvas, size=None, steps=2)


def game_rows(db):
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(
            "SELECT label, source, prompt, recognized, strokes_json, predicted_json, drawing_id"
            " FROM feedback WHERE source = 'game' ORDER BY id"
        ).fetchall()


def test_a_game_is_played_won_and_stored(browser, server, drawings):
    url, db = server
    context, page = open_play(browser, url + "/?seed=3", viewport={"width": 1000, "height": 900})
    page.focus("#play-start")
    page.keyboard.press("Enter")  # everything but drawing works from the keyboard
    page.wait_for_selector("#play-round:not([hidden]) #play-word:not(:empty)")
    word = page.locator("#play-word").text_content()
    assert word in WORDS
    first = int(page.locator("#play-timer").text_content())
    time.sleep(1.3)
    assert 0 < int(page.locator("#play-timer").text_content()) < first <= 20  # it runs
    draw(page, drawings[word][0])
    page.wait_for_selector("#play-next:not([hidden])")
    assert page.locator("#play-guess").text_content() == f"Oh, I know: it's {word}!"
    assert page.evaluate("document.activeElement.id") == "play-next"

    for _ in range(5):  # the other rounds by keyboard alone: Next, then Skip
        page.keyboard.press("Enter")  # Next (focused)
        page.wait_for_selector("#play-skip:not([hidden])")
        assert page.evaluate("document.activeElement.id") == "play-skip"
        page.keyboard.press("Enter")  # Skip this word
        page.wait_for_selector("#play-next:not([hidden])")
    page.keyboard.press("Enter")  # See your drawings
    page.wait_for_selector("#play-end:not([hidden])")
    cards = page.locator("#play-results li")
    assert cards.count() == 6
    assert "recognised" in cards.first.text_content() and word in cards.first.text_content()
    assert cards.nth(1).locator(".verdict").text_content() == "not recognised"
    assert page.locator("#play-results canvas.thumb").count() == 6
    assert page.evaluate("document.activeElement.id") == "play-end-title"
    page.wait_for_selector("#play-saved:has-text('saved')")

    [row] = game_rows(db)  # skipped rounds without a drawing store nothing
    assert (row["label"], row["source"], row["prompt"], row["recognized"]) == (
        word, "game", word, 1
    )  # fmt: skip
    strokes = json.loads(row["strokes_json"])
    # the drawing up to the moment it was recognised (strokes after the win are not taken)
    assert 1 <= len(strokes) <= len(drawings[word][0]) and all(len(s) == 3 for s in strokes)
    times = [t for s in strokes for t in s[2]]
    assert times[0] == 0 and times == sorted(times) and times[-1] > 0  # ms since the start
    assert json.loads(row["predicted_json"])[0]["label"] == word
    assert row["drawing_id"]

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "play-again"
    page.keyboard.press("Enter")  # Play again
    page.wait_for_selector("#play-round:not([hidden]) #play-word:not(:empty)")
    assert page.evaluate("window.__violations") == []
    context.close()


def test_a_lost_round_is_stored_with_what_the_model_thought(browser, server, drawings):
    """Drawing another word's picture: not recognised, stored under the word asked."""
    url, db = server
    before = len(game_rows(db))
    context, page = open_play(browser, url + "/?seed=5", viewport={"width": 1000, "height": 900})
    page.click("#play-start")
    page.wait_for_selector("#play-word:not(:empty)")
    word = page.locator("#play-word").text_content()
    draw(page, never_taken_for(url, word, drawings))
    page.wait_for_selector("#play-guess:has-text('I see')")
    page.click("#play-skip")
    page.wait_for_selector("#play-next:not([hidden])")
    deadline = time.monotonic() + 10
    while len(game_rows(db)) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    row = game_rows(db)[-1]
    assert (row["label"], row["prompt"], row["recognized"]) == (word, word, 0)
    assert json.loads(row["predicted_json"])[0]["label"] != word
    context.close()


def touch_drag(page, points):
    """A finger drawing through ``points`` (page coordinates), as real touch events."""
    cdp = page.context.new_cdp_session(page)
    (x, y), *rest = points
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for x, y in rest:
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_a_phone_plays_with_a_finger_without_scrolling_the_page(browser, server):
    url, _ = server
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
             "device_scale_factor": 3}  # fmt: skip
    context, page = open_play(browser, url + "/?seed=1", **phone)
    page.click("#play-start")
    page.wait_for_selector("#play-word:not(:empty)")
    # a page long enough to scroll: a finger on the canvas must draw, not scroll it
    page.evaluate("document.body.appendChild(document.createElement('div')).id = 'tall'")
    page.evaluate("document.getElementById('tall').style.height = '2000px'")
    box = page.locator("#play-canvas").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.8
    touch_drag(page, [(x0, y0 - 12 * k) for k in range(20)])  # an upward swipe
    page.wait_for_selector("#play-guess:has-text('I see'), #play-guess:has-text('I know')")
    assert page.evaluate("window.scrollY") == 0
    for button in ("#play-clear", "#play-skip"):
        size = page.locator(button).bounding_box()
        assert size["height"] >= 44 and size["width"] >= 44
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    assert page.evaluate("window.__violations") == []
    context.close()


def test_send_then_right_on_one_drawing_stores_one_answer(browser, server, drawings):
    """The Draw tab: a correction (Send) and then Right! for the same drawing leave one
    row, holding the last answer; a new drawing gets its own row."""
    url, db = server
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#model-line:has-text('cnn-small')")
    draw(page, drawings["star"][0], canvas="#canvas")
    page.wait_for_selector("#feedback:not([hidden])")
    page.wait_for_selector("#guess-line:has-text('star')")
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT count(*) FROM feedback").fetchone()[0]
    page.select_option("#correct-label", "cup")
    page.click("#send-correction")
    page.wait_for_selector("#feedback-status:has-text('cup')")
    page.click("#right")
    page.wait_for_selector("#feedback-status:has-text('star')")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT label, source, drawing_id FROM feedback ORDER BY id"
        ).fetchall()[before:]
    assert [(label, source) for label, source, _ in rows] == [("star", "page")]
    assert rows[0][2]  # the drawing's id
    context.close()


def post_json(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_the_review_tab_filters_and_shows_the_source(browser, server):
    url, _ = server
    game = post_json(url, "/v1/game/rounds", {
        "word": "fish", "strokes": [[[3, 90, 200], [40, 41, 45], [0, 50, 90]]],
        "recognized": False, "predicted": [{"label": "cup", "probability": 0.7}],
    })["id"]  # fmt: skip
    page_row = post_json(url, "/v1/feedback", {
        "input": {"strokes": [[[9, 99], [9, 199]]]}, "label": "cup", "source": "page",
    })["id"]  # fmt: skip
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#model-line:has-text('cnn-small')")
    page.click("#tab-review")
    page.fill("#admin-token", TOKEN)
    page.click("#review-login button[type=submit]")
    page.wait_for_selector(f"#review-grid .pick[value='{page_row}']")
    page.select_option("#review-filter-source", "game")
    page.wait_for_selector(f"#review-grid .pick[value='{page_row}']", state="detached")
    card = page.locator("#review-grid .card", has=page.locator(f".pick[value='{game}']"))
    assert "game (not recognised)" in card.text_content() and "Given: fish" in card.text_content()
    sources = page.locator("#review-grid .meta").all_text_contents()
    assert sources and all(t.startswith("game") for t in sources)
    context.close()


def test_the_game_asks_the_in_browser_model_when_the_page_has_one(browser, server):
    """play.js's one call to the model goes to window.imgclassGuess (infer.js's
    in-browser model) when it exists: here a stand-in that is always sure of the word."""
    url, _ = server
    context, page = open_play(browser, url + "/?seed=2", viewport={"width": 1000, "height": 900})
    page.evaluate(
        "window.__asked = 0; window.imgclassGuess = async (strokes, options) => {"
        " window.__asked += 1; const word = document.getElementById('play-word').textContent;"
        " return {top: [{label: word, probability: 0.99}], where: 'browser'}; }"
    )
    page.click("#play-start")
    page.wait_for_selector("#play-word:not(:empty)")
    box = page.locator("#play-canvas").bounding_box()
    page.mouse.move(box["x"] + 50, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 120, steps=5)
    page.mouse.up()
    page.wait_for_selector("#play-guess:has-text('I know')")
    assert page.evaluate("window.__asked") >= 1
    context.close()


AXE = Path(__file__).parents[1] / "fixtures" / "vendor" / "axe-core" / "axe.min.js"


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not vendored in tests/fixtures")
def test_the_game_screens_have_no_serious_accessibility_violations(browser, server, drawings):
    url, _ = server
    context = browser.new_context(viewport={"width": 1000, "height": 900}, bypass_csp=True)
    page = context.new_page()  # bypass_csp: axe is injected as a script tag
    page.goto(url + "/?seed=4")
    page.wait_for_selector("#model-line:has-text('cnn-small')")
    page.click("#tab-play")
    page.add_script_tag(path=str(AXE))
    found = {}

    def check(screen: str) -> None:
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        for v in result["violations"]:
            if v["impact"] in ("serious", "critical"):
                found[f"{screen}: {v['id']}"] = [n["target"] for n in v["nodes"]][:5]

    check("intro")
    page.click("#play-start")
    page.wait_for_selector("#play-word:not(:empty)")
    word = page.locator("#play-word").text_content()
    draw(page, drawings[word][0])
    page.wait_for_selector("#play-next:not([hidden])")
    check("round")
    for _ in range(5):
        page.click("#play-next")
        page.click("#play-skip")
    page.click("#play-next")
    page.wait_for_selector("#play-end:not([hidden])")
    check("end")
    assert found == {}
    context.close()
