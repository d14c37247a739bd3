"""Screenshots of the web page for the docs: every tab, on a desktop and on a phone.

Serves a bundle with a real uvicorn server on 127.0.0.1 and drives Debian's Chromium
(headless, Playwright) as a person would: a real Quick, Draw! drawing from the built-in
strokes drawn stroke by stroke with the mouse, built-in doodles uploaded as PNG files, the
Explore and Model tabs (a confusion cell opened), and Play: its start, a round being
drawn with the model's guesses, and the end screen of a whole game (real drawings of the
words asked, each drawn until the model recognises it or skipped).

    python bench/screenshots.py [--model RUNDIR/bundle] [--out docs/screenshots]
        [--only play-round,play-end]

Without --model it prepares the built-in doodles and trains cnn-small for --epochs epochs
in a temporary folder (a minute or two). Writes <out>/<viewport>-<tab>.png, prints a table
of the files and one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from imgclass.cli import main as imgclass  # noqa: E402
from imgclass.data.builtin import get_builtin  # noqa: E402
from imgclass.serve.app import create_app  # noqa: E402
from imgclass.serve.settings import ServeSettings  # noqa: E402
from imgclass.testing import LocalServer  # noqa: E402

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
WORDS = ("cat", "bicycle", "sun", "house", "fish")  # the drawing shown: the first one it knows


def train_bundle(tmp: Path, epochs: int) -> Path:
    data, run = tmp / "doodles", tmp / "run"
    assert imgclass(["-q", "data", "prepare", "--builtin", "doodles", "--out", str(data)]) == 0
    args = ["-q", "train", "--data", str(data), "--model", "cnn-small", "--out", str(run)]
    assert imgclass([*args, "--epochs", str(epochs)]) == 0
    return run / "bundle"


def serve(bundle: Path, feedback_db: Path) -> LocalServer:
    settings = ServeSettings(models=[str(bundle)], feedback_db=feedback_db, admin_token=None)
    return LocalServer(create_app(settings))


def predict(url: str, strokes: list) -> list[dict]:
    body = json.dumps({"strokes": strokes}).encode()
    request = urllib.request.Request(
        url + "/v1/predict", body, {"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(request, timeout=10).read())["predictions"]


def builtin_drawings() -> list[dict]:
    with gzip.open(get_builtin("doodle-strokes").path, "rt") as f:
        return [json.loads(line) for line in f]


def pick_drawing(url: str, classes: list[str], words: tuple[str, ...] = WORDS) -> list:
    """The first built-in drawing of ``words`` (or of any class) the model gets right."""
    drawings = builtin_drawings()
    words = tuple(w for w in words if w in classes) or tuple(classes)
    right = []
    for word in words:
        for d in (d for d in drawings if d["word"] == word):
            strokes = [s[:2] for s in d["drawing"]]
            top = predict(url, strokes)[0]
            if top["label"] == word and top["probability"] >= 0.6:
                return strokes  # right and sure of it
            if top["label"] == word:
                right.append(strokes)
    return right[0] if right else [s[:2] for s in drawings[0]["drawing"]]


def draw(page, strokes: list, canvas: str = "#canvas", upto: int | None = None) -> None:
    """Draw strokes (any coordinates) fitted into the canvas with a margin, point by point
    (the first ``upto`` strokes only, placed as in the whole drawing)."""
    xs = np.concatenate([s[0] for s in strokes])
    ys = np.concatenate([s[1] for s in strokes])
    side = max(np.ptp(xs), np.ptp(ys), 1)
    box = page.locator(canvas).bounding_box()
    scale = 0.8 * box["width"] / side
    left = box["x"] + (box["width"] - scale * np.ptp(xs)) / 2 - scale * xs.min()
    top = box["y"] + (box["height"] - scale * np.ptp(ys)) / 2 - scale * ys.min()
    for sx, sy in strokes[:upto]:
        page.mouse.move(left + scale * sx[0], top + scale * sy[0])
        page.mouse.down()
        for x, y in zip(sx[1:], sy[1:], strict=True):
            page.mouse.move(left + scale * x, top + scale * y)
        page.mouse.up()


def upload_files(tmp: Path) -> list[Path]:
    """Three built-in doodles as dark-on-white PNG files, as a person would have them."""
    with np.load(get_builtin("doodles").path) as z:
        x, y, classes = z["x"], z["y"], [str(c) for c in z["classes"]]
    paths = []
    for k in (0, 81, 170):
        path = tmp / f"{classes[int(y[k])]}.png"
        Image.fromarray(255 - x[k]).resize((168, 168), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def shoot(browser, url: str, out: Path, name: str, viewport: dict, strokes, files, only) -> list:
    context = browser.new_context(
        viewport=viewport, bypass_csp=True, is_mobile=name == "phone", has_touch=name == "phone"
    )
    page = context.new_page()
    page.goto(url + "/?seed=4")  # the same game every time (Play)
    page.wait_for_selector("#model-line:has-text('trained')")
    shots = []

    def wanted(*tabs: str) -> bool:
        return not only or bool(only & set(tabs))

    def snap(tab: str, full: bool = False) -> None:
        if not wanted(tab):
            return
        path = out / f"{name}-{tab}.png"
        page.screenshot(path=str(path), full_page=full)
        shots.append(path)

    if wanted("draw", "upload", "explore", "model"):
        draw(page, strokes)
        page.wait_for_selector("#guesses li")
        page.wait_for_timeout(300)
        snap("draw")
        page.click("#tab-upload")
        page.set_input_files("#files", [str(f) for f in files])
        page.wait_for_function("document.querySelectorAll('#results .feedback').length === 3")
        snap("upload")
        page.click("#tab-explore")
        page.wait_for_function("document.getElementById('example-img').naturalWidth > 0")
        snap("explore")
        page.click("#tab-model")
        page.wait_for_selector("#report td[data-true]")
        if name == "desktop":  # a cell's examples beside the matrix
            page.locator("#report td[data-true='0'][data-pred='0']").click()
            page.wait_for_selector("#cell figure img")
            page.wait_for_timeout(600)  # the smooth scroll, if any
        snap("model", full=name == "desktop")
    if page.locator("#tab-play").count() and wanted("play", "play-round", "play-end"):
        page.click("#tab-play")
        page.wait_for_timeout(800)
        snap("play")
        if wanted("play-round", "play-end"):
            play_game(page, url, snap)
    context.close()
    return shots


def play_game(page, url: str, snap) -> None:
    """A whole game: each word drawn from a built-in drawing of it that the server's model
    gets right, stroke by stroke until the model calls it (else skipped), except the
    fourth, drawn as another word (the end screen shows what the model thought instead);
    the first round is shot while its guesses show, then the end screen."""
    classes = json.loads(urllib.request.urlopen(url + "/v1/models").read())["models"][0]
    page.click("#play-start")
    for round_ in range(6):
        page.wait_for_selector("#play-round:not([hidden]) #play-word:not(:empty)")
        word = page.locator("#play-word").text_content()
        drawn = word if round_ != 3 else next(c for c in classes["classes"] if c != word)
        strokes = pick_drawing(url, classes["classes"], (drawn,))
        if round_ == 0:  # mid-round: part of the drawing, the model still guessing
            draw(page, strokes, "#play-canvas", upto=max(1, len(strokes) // 2))
            page.wait_for_function(
                "/I see|Oh, I know/.test(document.getElementById('play-guess').textContent)"
            )
            page.wait_for_timeout(400)
            snap("play-round")
        if page.locator("#play-next").is_hidden():
            draw(page, strokes, "#play-canvas")
        try:
            page.wait_for_selector("#play-next:not([hidden])", timeout=2500)
        except Exception:  # not recognised in time for the picture: the next word
            page.click("#play-skip")
        page.click("#play-next")
    page.wait_for_selector("#play-end:not([hidden])")
    page.wait_for_selector("#play-saved:has-text('saved')")
    snap("play-end", full=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a bundle (default: train a quick one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--epochs", type=int, default=8, help="without --model")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--only", default="", help="comma-separated shots to (re)write, e.g. play-round,play-end"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    only = {t for t in args.only.split(",") if t}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        bundle = args.model or train_bundle(tmp, args.epochs)
        server = serve(bundle, tmp / "feedback.sqlite3")
        url = server.url
        classes = json.loads(urllib.request.urlopen(url + "/v1/models").read())["models"][0]
        strokes = pick_drawing(url, classes["classes"])
        files = upload_files(tmp)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            shots = [
                shot
                for view, size in VIEWPORTS.items()
                for shot in shoot(browser, url, args.out, view, size, strokes, files, only)
            ]
            browser.close()
        server.stop()
    print(f"{'file':<40} {'pixels':>10} {'bytes':>8}")
    for shot in shots:
        with Image.open(shot) as im:
            print(
                f"{shot.relative_to(args.out.parent)!s:<40} {im.width:>4}x{im.height:<5}"
                f" {shot.stat().st_size:>8}"
            )
    print(json.dumps({"screenshots": [str(s) for s in shots], "model": str(bundle)}))


if __name__ == "__main__":
    main()
