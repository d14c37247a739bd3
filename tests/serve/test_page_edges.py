"""The rough edges a new user found on the page (issue 13, part 3), each checked in a real
browser (Debian's Chromium, headless, driven by Playwright) against a real uvicorn server
on 127.0.0.1; and an accessibility check of every tab with axe-core (vendored from npm
under tests/fixtures, injected by the test: the page itself never loads it)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from imgclass.testing import LocalServer
from imgclass.testing import draw_strokes as draw

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).parents[1] / "fixtures" / "vendor" / "axe-core" / "axe.min.js"
TOKEN = "edge-token"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TABS = ("draw", "upload", "explore", "model")
pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed"
)
sync_api = pytest.importorskip("playwright.sync_api")
ONE = [[(140, 40), (140, 110), (141, 180), (141, 245)]]


@pytest.fixture(scope="module")
def servers(digits_bundle, tmp_path_factory):
    """start(**settings) -> (url, feedback db): a real uvicorn server per distinct set of
    settings, started once for the module."""
    running: dict[str, tuple[str, Path]] = {}
    started: list[LocalServer] = []

    def start(**settings):
        key = json.dumps(settings, sort_keys=True)
        if key not in running:
            db = tmp_path_factory.mktemp("edges") / "feedback.sqlite3"
            app = create_app(ServeSettings(models=[str(digits_bundle)], feedback_db=db, **settings))
            started.append(LocalServer(app))
            running[key] = (started[-1].url, db)
        return running[key]

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    """open_page(url, viewport, **context options) -> a page with the model loaded."""
    contexts = []

    def open_(url, viewport=DESKTOP, **options):
        # bypass_csp: Playwright's waits and axe's injection run as eval
        context = browser.new_context(viewport=viewport, bypass_csp=True, **options)
        contexts.append(context)
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model-line').textContent.includes('cnn')")
        return page

    yield open_
    for context in contexts:
        context.close()


def digit_png(path: Path, shared_data: Path, index: int) -> int:
    """An MNIST test digit, dark on white and enlarged, saved at ``path``; its label."""
    m = np.load(shared_data / "mnist.npz")
    Image.fromarray(255 - m["x_test"][index]).resize((140, 140)).save(path)
    return int(m["y_test"][index])


def open_tab(page, name):
    page.click(f"#tab-{name}")
    if name == "explore":
        page.wait_for_function("document.getElementById('example-img').naturalWidth > 0")
    if name == "model":
        page.wait_for_selector("#report td[data-true]")


# --- keyboard shortcuts -----------------------------------------------------------------


def test_shortcuts_belong_to_the_draw_tab_and_never_to_a_field(servers, open_page):
    url, _ = servers(admin_token=TOKEN)
    page = open_page(url)
    draw(page, ONE + ONE)
    count = "strokes.length"
    assert page.evaluate(count) == 2
    page.click("#tab-upload")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+z")
    assert page.evaluate(count) == 2, "a shortcut fired on the Upload tab"
    page.click("#tab-review")
    page.fill("#admin-token", "typed")
    page.keyboard.press("Control+z")
    page.keyboard.press("Escape")
    assert page.evaluate(count) == 2, "a shortcut fired while typing in a field"
    page.click("#tab-draw")
    page.wait_for_selector("#feedback:not([hidden])")
    page.focus("#correct-label")
    page.keyboard.press("Control+z")
    page.keyboard.press("Escape")
    assert page.evaluate(count) == 2, "a shortcut fired in the correction list"
    page.focus("#canvas")
    page.keyboard.press("Control+z")
    assert page.evaluate(count) == 1  # on the Draw tab they work
    page.keyboard.press("Escape")
    assert page.evaluate(count) == 0


# --- API docs offline ---------------------------------------------------------------------


def test_api_docs_render_with_every_external_request_blocked(servers, browser):
    url, _ = servers()
    context = browser.new_context(viewport=DESKTOP)
    external = []

    def only_local(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(url + "/docs")
    page.wait_for_selector(
        ".swagger-ui .opblock-summary-path:has-text('/v1/predict')", timeout=15000
    )
    assert page.locator(".swagger-ui .opblock").count() >= 20
    assert page.evaluate("window.__violations") == []
    page.goto(url + "/redoc")
    page.wait_for_selector("h1:has-text('imgclass')", timeout=15000)
    page.get_by_text("/v1/predict").first.wait_for(state="attached")
    assert page.locator("[role=menuitem]").count() >= 20
    assert page.evaluate("window.__violations") == []
    assert external == []
    context.close()


# --- phone --------------------------------------------------------------------------------

TARGETS = """() => [...document.querySelectorAll(
  'button, select, summary, a[href], input:not([type=checkbox]), [role=tab], .cm td[data-true]')]
  .filter((e) => e.offsetParent !== null)
  .map((e) => { const r = e.getBoundingClientRect();
    return [e.id || e.className || e.tagName, Math.round(r.width), Math.round(r.height)]; })
  .filter(([, w, h]) => w < 44 || h < 44)"""


def test_phone_no_horizontal_scroll_every_tab_visible_and_touch_targets_44px(servers, open_page):
    url, _ = servers(admin_token=TOKEN)  # every tab shown, Review too
    page = open_page(url, PHONE, has_touch=True, is_mobile=True)
    for name in (*TABS, "review"):
        open_tab(page, name)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: the page is {width} px wide"
        for tab in page.locator("[role=tab]:visible").all():
            box = tab.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], tab.text_content()
        assert page.evaluate(TARGETS) == [], name
        if name == "explore":
            assert page.locator("#next").bounding_box()["height"] >= 44


# --- the model tab ------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_confusion_cell_shows_its_examples_in_view(servers, open_page, viewport):
    url, _ = servers()
    page = open_page(url, viewport)
    open_tab(page, "model")
    page.locator("#report td[data-true='9'][data-pred='9']").click()
    page.wait_for_selector("#cell .cell-examples figure")
    page.wait_for_function(
        """() => { const r = document.querySelector('#cell .cell-examples').getBoundingClientRect();
        return r.top >= 0 && r.top < innerHeight - 40; }""",
        timeout=5000,
    )


def hold_first(page, pattern: str) -> list:
    """Holds back the first request matching ``pattern`` (the list gets its route, to be
    answered by the test later); the others go through: answers out of order."""
    held: list = []

    def handle(route):
        if not held:
            held.append(route)
        else:
            route.continue_()

    page.route(pattern, handle)
    return held


def test_explore_shows_the_answer_to_the_latest_next_only(servers, open_page):
    """Next clicked while the first example is slow: the first answer, coming last, is
    dropped; the example shown is the one asked for last (issue 13, like the stale guess)."""
    url, _ = servers()
    page = open_page(url)
    held = hold_first(page, "**/examples/random")
    page.click("#tab-explore")  # asks for an example: held
    page.wait_for_timeout(200)
    page.click("#next")  # asks again: answered
    page.wait_for_function(
        "document.getElementById('example-caption').textContent.startsWith('This is')"
    )
    shown = page.locator("#example-caption").text_content()
    late = {
        "label": "held-back",
        "image": PIXEL,
        "predictions": [{"label": "x", "probability": 1.0}],
    }
    held[0].fulfill(status=200, content_type="application/json", body=json.dumps(late))
    page.wait_for_timeout(500)
    assert page.locator("#example-caption").text_content() == shown != "This is: held-back"


def test_a_confusion_cell_clicked_last_keeps_its_examples(servers, open_page):
    """Two cells clicked, the first one's examples slow: the second cell's stay shown."""
    url, _ = servers()
    page = open_page(url)
    open_tab(page, "model")
    held = hold_first(page, "**/confusion?*")
    page.locator("#report td[data-true='9'][data-pred='9']").click()  # held
    page.locator("#report td[data-true='1'][data-pred='1']").click()
    page.wait_for_selector("#cell .cell-examples figure")
    assert page.locator("#cell h3").text_content().startswith("1 seen as 1")
    held[0].fulfill(status=200, content_type="application/json", body=json.dumps({"examples": []}))
    page.wait_for_timeout(500)
    assert page.locator("#cell h3").text_content().startswith("1 seen as 1")
    assert page.locator("#cell .cell-examples figure").count() > 0


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="


CONTRAST = """() => [...document.querySelectorAll('#report td[data-true]')].map((td) => {
  const rgb = (s) => s.match(/\\d+/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = c.map((v) => { v /= 255;
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const s = getComputedStyle(td), a = lum(rgb(s.color)), b = lum(rgb(s.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); })"""


def test_matrix_text_contrast_and_metric_names_in_plain_words(servers, open_page):
    url, _ = servers()
    page = open_page(url)
    open_tab(page, "model")
    ratios = page.evaluate(CONTRAST)
    assert len(ratios) == 100 and min(ratios) >= 4.5, min(ratios)
    metrics = page.locator("#model-info table.metrics").text_content()
    assert "Mean average precision at 3" in metrics or "Accuracy" in metrics
    assert "how often the first guess is right" in metrics
    names = page.locator("#model-info table.metrics th").all_text_contents()
    assert not [n for n in names if n.split("how")[0].strip() in ("accuracy", "map3", "ece", "n")]
    explained = page.evaluate("Object.keys(METRICS)")
    assert {"accuracy", "top3_accuracy", "map3", "macro_f1", "ece"} <= set(explained)


# --- the draw tab -------------------------------------------------------------------------


def test_draw_tab_lists_what_it_knows_and_corrections_start_on_choose(servers, open_page):
    url, db = servers()
    page = open_page(url)
    page.click("#knows summary")
    assert page.locator("#knows-summary").text_content() == "It knows 10 things"
    assert page.locator("#knows-list").text_content() == ", ".join(str(d) for d in range(10))
    draw(page, ONE)
    page.wait_for_selector("#feedback:not([hidden])")
    assert page.locator("#correct-label").input_value() == ""
    assert page.locator("#correct-label option").first.text_content() == "choose…"
    page.click("#send-correction")
    page.wait_for_function(
        "document.getElementById('feedback-status').textContent.includes('Choose what it is first')"
    )
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0


@pytest.mark.parametrize(("hedge", "start"), [(1.0, "maybe "), (0.0, "I see… ")])
def test_an_unsure_guess_is_hedged(servers, open_page, hedge, start):
    url, _ = servers(hedge_below=hedge)
    page = open_page(url)
    draw(page, ONE)
    page.wait_for_selector("#guesses li")
    top = page.locator("#guesses li .label").first.text_content()
    line = page.locator("#guess-line").text_content()
    assert line == (f"maybe {top}?" if hedge else f"I see… {top}")


# --- upload -------------------------------------------------------------------------------


def test_a_photo_sent_to_a_drawing_model_is_told_so(servers, open_page, tmp_path, shared_data):
    url, _ = servers()
    page = open_page(url)
    photo = sorted((shared_data / "photos" / "cats_vs_dogs" / "cat").glob("*.jpg"))[0]
    digit = tmp_path / "digit.png"
    digit_png(digit, shared_data, 0)
    page.click("#tab-upload")
    page.set_input_files("#files", [str(photo), str(digit)])
    page.wait_for_function("document.querySelectorAll('#results li .feedback').length === 2")
    cards = page.locator("#results > li")
    assert "This model reads drawings" in cards.nth(0).locator(".note").text_content()
    assert cards.nth(1).locator(".note").count() == 0  # a drawing: nothing to say
    assert page.evaluate("model.reads") == "drawings"
    assert not page.locator("#reads-note").is_visible()
    # a photo model says the reverse about a drawing, uploaded or drawn
    assert "reads photos" in page.evaluate("model.reads = 'photos', mismatchNote('drawing')")
    page.evaluate("showModel(model)")
    page.click("#tab-draw")
    assert "reads photos" in page.locator("#reads-note").text_content()
    assert page.locator("#reads-note").is_visible()


def test_upload_results_keep_the_chosen_order_and_a_bad_file_is_said_plainly(
    servers, open_page, tmp_path, shared_data
):
    url, _ = servers()
    page = open_page(url)
    files = [tmp_path / "a-first.png", tmp_path / "b-broken.png", tmp_path / "c-third.png"]
    digit_png(files[0], shared_data, 0)
    files[1].write_bytes(b"these are notes, not a picture")
    digit_png(files[2], shared_data, 1)
    page.click("#tab-upload")
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function(
        "document.querySelectorAll('#results li .feedback, #results li .error').length === 3"
    )
    cards = page.locator("#results > li")
    assert [cards.nth(i).locator(".name").text_content() for i in range(3)] == [
        f.name for f in files
    ]
    bad = cards.nth(1)
    assert bad.locator(".error").text_content() == (
        "This file is not an image we can read (b-broken.png)."
    )
    assert bad.locator("img").count() == 0  # no broken-image icon
    # the API's own answer names no Python exception either
    request = urllib.request.Request(
        url + "/v1/predict",
        data=b'--x\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n\r\n'
        b"not an image\r\n--x--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    detail = json.loads(refused.value.read())["detail"]
    assert refused.value.code == 415 and "Error" not in detail and "not an image" in detail


# --- header, review tab, favicon ----------------------------------------------------------


def test_no_review_tab_without_admin_a_favicon_and_a_readable_version(servers, open_page):
    url, _ = servers()
    missing = []
    page = open_page(url)
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.reload()
    page.wait_for_function("document.getElementById('model-line').textContent.includes('cnn')")
    assert not page.locator("#tab-review").is_visible()
    line = page.locator("#model-line").text_content()
    model = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=10).read())["models"][0]
    assert model["version"] not in line and "trained 20" in line
    assert model["version"] in page.locator("#model-line").get_attribute("title")
    for path in ("/favicon.ico", "/static/favicon.svg"):
        icon = urllib.request.urlopen(url + path, timeout=10)
        assert icon.headers["content-type"].startswith("image/svg+xml")
    assert page.locator("link[rel=icon]").count() == 1 and missing == []
    admin_url, _ = servers(admin_token=TOKEN)
    assert open_page(admin_url).locator("#tab-review").is_visible()


# --- accessibility ------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_no_serious_accessibility_violations_on_any_tab(
    servers, open_page, viewport, tmp_path, shared_data
):
    """Every tab as someone uses it: a drawing with its guesses, an uploaded picture with
    its correction controls, an example, the report with a cell's examples, the login."""
    url, _ = servers(admin_token=TOKEN)
    page = open_page(url, viewport)
    draw(page, ONE)
    page.wait_for_selector("#guesses li")
    page.add_script_tag(path=str(AXE))
    digit = tmp_path / "digit.png"
    digit_png(digit, shared_data, 2)
    found = {}
    for name in (*TABS, "review"):
        open_tab(page, name)
        if name == "upload":
            page.set_input_files("#files", str(digit))
            page.wait_for_selector("#results .feedback select")
        if name == "model":
            page.locator("#report td[data-true='1'][data-pred='1']").click()
            page.wait_for_selector("#cell figure img")
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        for v in result["violations"]:
            if v["impact"] in ("serious", "critical"):
                found[f"{name}: {v['id']}"] = [n["target"] for n in v["nodes"]][:5]
    assert found == {}
