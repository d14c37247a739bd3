"""index.html of an evaluation report: plain HTML tables and pictures, inline CSS, no JS."""

from __future__ import annotations

from html import escape
from typing import Any

SUMMARY = (
    ("accuracy", "accuracy"),
    ("top3_accuracy", "top-3 accuracy"),
    ("map3", "MAP@3"),
    ("macro_f1", "macro F1"),
    ("ece", "calibration error (ECE, 15 bins)"),
    ("ece_uncalibrated", "ECE before calibration"),
    ("temperature", "calibration temperature"),
)

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #f7f7f7; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
.bar { display: inline-block; height: 0.8em; background: #4a7fb5; vertical-align: middle; }
"""


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def _table(head: list[str] | None, rows: list[list[str]], numeric: set[int]) -> str:
    """An HTML table; cells are already escaped; columns in ``numeric`` right-aligned.
    Without ``head`` the first column is a column of row headers."""

    def cell(tag: str, j: int, text: str) -> str:
        cls = ' class="num"' if j in numeric else ""
        return f"<{tag}{cls}>{text}</{tag}>"

    def row_html(row: list[str]) -> str:
        tags = ["th" if head is None and j == 0 else "td" for j in range(len(row))]
        cells = (cell(t, j, c) for j, (t, c) in enumerate(zip(tags, row, strict=True)))
        return "<tr>" + "".join(cells) + "</tr>"

    header = ""
    if head is not None:
        header = "<thead><tr>" + "".join(cell("th", j, escape(h)) for j, h in enumerate(head))
        header += "</tr></thead>"
    body = "\n".join(row_html(row) for row in rows)
    return f"<table>{header}<tbody>\n{body}\n</tbody></table>"


def summary_table(report: dict[str, Any], trained: dict[str, Any]) -> str:
    """This evaluation's numbers beside the test numbers recorded at training time."""
    rows = [
        [escape(label), _num(report.get(key)), _num(trained.get(key))] for key, label in SUMMARY
    ]
    rows.append(["examples", str(report["n"]), str(trained.get("n", "–"))])
    return _table(["metric", "this evaluation", "test split at training time"], rows, {1, 2})


def model_table(bundle: Any, report: dict[str, Any]) -> str:
    """What the model is and what it was trained on (model.json, preprocess.json)."""
    info = bundle.model_json
    spec = bundle.preprocess.get("input", {})
    shape = spec.get("size") if spec.get("kind") == "image" else spec.get("format")
    history = bundle.metrics.get("history") or []
    rows = [
        ("model", info.get("name")),
        ("family", f"{info.get('family')} ({info.get('framework')})"),
        ("input", f"{spec.get('kind')} {shape}"),
        ("recipe", bundle.recipe.get("name")),
        ("classes", len(bundle.labels)),
        ("trained on", info.get("dataset", {}).get("path")),
        ("epochs", len(history) or "–"),
        ("training time", _seconds(bundle.metrics.get("train_seconds"))),
        ("created", info.get("created")),
        ("evaluated on", f"{report['data']} ({report['split']} split)"),
    ]
    return _table(None, [[escape(k), escape(str(v))] for k, v in rows], set())


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def pairs_table(pairs: list[dict[str, Any]]) -> str:
    rows = [
        [escape(p["true"]), escape(p["predicted"]), str(p["count"]), f"{p['rate']:.1%}"]
        for p in pairs
    ]
    return _table(
        ["true class", "predicted as", "examples", "share of the true class"], rows, {2, 3}
    )


def per_class_table(per_class: dict[str, dict[str, Any]]) -> str:
    """Classes present in the data, worst F1 first, with a bar for the F1."""
    items = sorted(
        ((c, v) for c, v in per_class.items() if v["support"] > 0),
        key=lambda kv: (kv[1]["f1"], kv[0]),
    )
    rows = [
        [
            escape(c),
            _num(v["precision"], 3),
            _num(v["recall"], 3),
            f'{_num(v["f1"], 3)} <span class="bar" style="width:{60 * v["f1"]:.0f}px"></span>',
            str(v["support"]),
        ]
        for c, v in items
    ]
    return _table(["class", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4})


def _figure(fig: dict[str, str], report: dict[str, Any]) -> str:
    """A picture's section; the most-confused pairs' one also holds their table."""
    html = (
        f'<h2 id="{escape(fig["file"][:-4])}">{escape(fig["title"])}</h2>\n<figure>'
        f'<img src="{escape(fig["file"])}" alt="{escape(fig["title"])}">'
        f"<figcaption>{escape(fig['caption'])}</figcaption></figure>"
    )
    if fig["file"] == "confused_pairs.png":
        html += "\n" + pairs_table(report["most_confused"])
    return html


def render_page(report: dict[str, Any], bundle: Any) -> str:
    """The whole page for a report (``report_json`` output) of ``bundle``."""
    name = escape(str(report.get("model")))
    nav = "".join(
        f'<a href="#{escape(f["file"][:-4])}">{escape(f["title"])}</a>' for f in report["pictures"]
    )
    parts = [
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{name}: evaluation report</title><style>{CSS}</style></head><body>",
        f"<h1>{name} on {escape(report['data'])}</h1>",
        f"<p class='note'>{escape(report['split'])} split, {report['n']} examples, "
        f"written {escape(report['created'])}.</p>",
        f"<nav>{nav}<a href='#classes'>Per class</a></nav>",
        "<h2>Summary</h2>",
        summary_table(report, bundle.metrics.get("test") or {}),
        "<h2>Model</h2>",
        model_table(bundle, report),
        *(_figure(f, report) for f in report["pictures"]),
        "" if report["most_confused"] else "<h2>Most-confused pairs</h2><p>No mistakes.</p>",
        "<h2 id='classes'>Per class</h2>",
        "<p class='note'>Classes present in the data, worst F1 first.</p>",
        per_class_table(report["per_class"]),
        "</body></html>\n",
    ]
    return "\n".join(parts)
