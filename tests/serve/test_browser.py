"""The page in a real browser (Debian's Chromium, headless, driven by Playwright)
against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request

import numpy as np
import pytest
from PIL import Image

from imgclass.bundle import load_bundle
from imgclass.data.preprocess import apply_recipe
from imgclass.data.render import render_strokes, simplify_raw
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from imgclass.testing import LocalServer
from imgclass.testing import draw_strokes as draw

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REVIEW_TOKEN = "review-token"
pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed"
)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(digits_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("fb") / "feedback.sqlite3"
    app = create_app(
        ServeSettings(models=[str(digits_bundle)], feedback_db=db, admin_token=REVIEW_TOKEN)
    )
    with LocalServer(app) as srv:
        yield srv.url, db


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    # Playwright's wait_for_function polls with eval, which the page's CSP refuses;
    # test_the_page_works_under_its_content_security_policy runs the page under it
    context = browser.new_context(viewport={"width": 900, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.goto(server[0] + "/")
    page.wait_for_function(
        "document.getElementById('model-line').textContent.includes('cnn-small')"
    )
    yield page
    context.close()


ONE = [[(140, 40), (140, 110), (141, 180), (141, 245)]]


def test_drawing_a_digit_shows_the_right_label(page):
    draw(page, ONE)
    page.wait_for_function("document.getElementById('guess-line').textContent.startsWith('I see')")
    assert page.locator("#guess-line").text_content() == "I see… 1"
    assert page.locator("#guesses li").count() == 3


def test_canvas_strokes_render_on_the_server_exactly_as_the_renderer_does(page, digits_bundle):
    draw(page, [[(60, 60), (200, 60), (120, 230)], [(90, 150), (170, 150)]])
    page.wait_for_function("document.getElementById('guess-line').textContent.startsWith('I see')")
    sent = page.evaluate("strokes.map((s) => [s[0].map(Math.round), s[1].map(Math.round), s[2]])")
    assert len(sent) == 2 and len(sent[0][0]) >= 3
    served = page.evaluate(
        """async (body) => (await (await fetch('/v1/predict?include_input=true', {
        method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({strokes: body})})).json()).input""",
        sent,
    )
    drawing = [np.asarray(s, dtype=np.float32).T for s in sent]
    recipe = load_bundle(digits_bundle).recipe
    expected = apply_recipe(recipe, render_strokes(simplify_raw(drawing))[None])[0]
    np.testing.assert_array_equal(np.array(served, dtype=np.uint8), expected)


def test_upload_shows_top_k(page, tmp_path, shared_data):
    m = np.load(shared_data / "mnist.npz")
    path = tmp_path / "digit.png"
    Image.fromarray(255 - m["x_test"][0]).resize((200, 200)).save(path)
    page.click("#tab-upload")
    page.set_input_files("#files", str(path))
    page.wait_for_selector("#results li .guess")
    assert page.locator("#results li .guess").count() == 3
    assert page.locator("#results li .guess .label").first.text_content() == str(m["y_test"][0])


def test_an_uploaded_picture_can_be_corrected(page, tmp_path, server, shared_data):
    m = np.load(shared_data / "mnist.npz")
    path = tmp_path / "digit-to-correct.png"
    Image.fromarray(255 - m["x_test"][1]).resize((120, 120)).save(path)
    wrong = str((int(m["y_test"][1]) + 1) % 10)
    page.click("#tab-upload")
    page.set_input_files("#files", str(path))
    card = page.locator("#results li").first
    card.locator(".feedback select").select_option(wrong)
    card.locator(".feedback .send").click()
    page.wait_for_function(
        "document.querySelector('#results li .feedback .status').textContent.includes('Thank')"
    )
    with sqlite3.connect(server[1]) as db:
        rows = db.execute("SELECT label, input_kind, length(image) FROM feedback").fetchall()
    assert (wrong, "image", path.stat().st_size) in rows  # the file's own bytes, stored


def test_a_correction_lands_in_the_database(page, server):
    draw(page, ONE)
    page.wait_for_selector("#feedback:not([hidden])")
    page.select_option("#correct-label", "7")
    page.click("#send-correction")
    page.wait_for_function(
        "document.getElementById('feedback-status').textContent.includes('Thank you')"
    )
    with sqlite3.connect(server[1]) as db:
        rows = db.execute("SELECT label, input_kind, strokes_json FROM feedback").fetchall()
    assert ("7", "strokes") in [(r[0], r[1]) for r in rows]


def test_an_admin_accepts_submissions_in_the_review_tab(page, server):
    ids = []
    for k in range(3):
        body = {"input": {"strokes": [[[10, 90 + 30 * k], [10, 220]]]}, "label": str(k),
                "predicted": [{"label": "1", "probability": 0.5}]}  # fmt: skip
        request = urllib.request.Request(
            server[0] + "/v1/feedback",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        ids.append(json.loads(urllib.request.urlopen(request, timeout=10).read())["id"])
    page.click("#tab-review")
    page.fill("#admin-token", "wrong")
    page.click("#review-login button[type=submit]")
    page.wait_for_function(
        "document.getElementById('review-message').textContent.includes('token')"
    )
    assert page.locator("#review-login").is_visible()
    page.fill("#admin-token", REVIEW_TOKEN)
    page.click("#review-login button[type=submit]")
    for fid in ids:
        page.wait_for_selector(f"#review-grid .pick[value='{fid}']")
    card = page.locator("#review-grid .card", has=page.locator(f".pick[value='{ids[1]}']"))
    assert "Given: 1" in card.text_content() and "Model said: 1 (50.0%)" in card.text_content()
    page.wait_for_function(
        "[...document.querySelectorAll('#review-grid img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    page.check(f".pick[value='{ids[0]}']")
    page.check(f".pick[value='{ids[2]}']")
    page.click("#review-accept")
    page.wait_for_function(
        "document.getElementById('review-message').textContent.includes('2 accepted')"
    )
    with sqlite3.connect(server[1]) as db:
        status = dict(db.execute("SELECT id, status FROM feedback").fetchall())
    assert [status[i] for i in ids] == ["accepted", "new", "accepted"]
    assert page.locator(f".pick[value='{ids[0]}']").count() == 0  # the grid shows "new" ones
    page.select_option("#review-filter-status", "accepted")
    page.wait_for_selector(f"#review-grid .pick[value='{ids[2]}']")


def test_the_page_works_under_its_content_security_policy(browser, server, tmp_path, shared_data):
    """The strict CSP is sent, and nothing on the page breaks it while drawing, uploading
    and reading the model's report: the guesses' bars and the confusion matrix's colours
    are set through the CSSOM, not inline style attributes."""
    policy = urllib.request.urlopen(server[0] + "/", timeout=10).headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in policy and "'unsafe-inline'" not in policy
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.add_init_script(
        "window.__violations = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(server[0] + "/")
    page.wait_for_selector("#model-line:has-text('cnn')")  # waits without eval (CSP)
    draw(page, ONE)
    page.wait_for_selector("#guesses li .bar")
    assert page.evaluate("document.querySelector('#guesses li .bar').style.width").endswith("%")
    m = np.load(shared_data / "mnist.npz")
    path = tmp_path / "digit.png"
    Image.fromarray(255 - m["x_test"][0]).save(path)
    page.click("#tab-upload")
    page.set_input_files("#files", str(path))
    page.wait_for_selector("#results li .guess .bar")
    page.click("#tab-model")
    page.wait_for_selector("#report td[data-true]")
    cell = "getComputedStyle(document.querySelector('#report td[data-true]')).backgroundColor"
    assert page.evaluate(cell).startswith("rgb(")
    assert page.evaluate("window.__violations") == [] and refused == []
    context.close()


def test_the_model_tab_shows_the_calibration(page, server, digits_bundle):
    """Issue 12: the temperature and the test ECE before and after calibration."""
    info = json.loads((digits_bundle / "model.json").read_text())
    t = info["calibration"]["temperature"]
    test = json.loads((digits_bundle / "metrics.json").read_text())["test"]
    page.click("#tab-model")
    text = page.locator("#model-info").inner_text()
    assert f"logits divided by {t:.3f}" in text
    before, after = test["ece_uncalibrated"], test["ece"]
    assert f"test calibration error {before:.3f} before, {after:.3f} after" in text
    api = json.loads(urllib.request.urlopen(server[0] + "/v1/models", timeout=10).read())
    assert api["models"][0]["calibration"]["temperature"] == pytest.approx(t)
