"""The report's pictures: each function takes arrays and returns a matplotlib Figure.

matplotlib is imported inside the functions (Agg backend), so evaluation without
``--report`` and the serving path never load it. Saving is the caller's business
(``imgclass.evaluate.report``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Up to this many classes the confusion matrix keeps the data's order, shows every
# label and writes the rates in the cells; above it, classes are clustered.
SMALL_MATRIX = 30
# Above this many classes only the labels of the most-confused classes are written.
LABEL_ALL_UP_TO = 100


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    normalised: np.ndarray = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    return normalised


def class_order(cm: np.ndarray) -> np.ndarray:
    """A permutation of the classes that puts classes confused with each other side by
    side: average-linkage clustering on the symmetrised, row-normalised confusion.

    cm: counts (K, K). Returns int array (K,).
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    k = len(cm)
    if k < 3:
        return np.arange(k)
    norm = row_normalise(cm)
    similarity = (norm + norm.T) / 2
    np.fill_diagonal(similarity, 0.0)
    top = similarity.max()
    distance = 1.0 - similarity / top if top > 0 else np.ones_like(similarity)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return np.asarray(leaves_list(tree), dtype=np.int64)


def _cell_texts(ax: Any, norm: np.ndarray, fontsize: float) -> None:
    for i, j in zip(*np.nonzero(norm), strict=True):
        ax.text(
            j,
            i,
            f"{norm[i, j]:.2f}".lstrip("0") if norm[i, j] < 1 else "1",
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if norm[i, j] > 0.5 else "black",
        )


def _ticks(ax: Any, labels: list[str], show: np.ndarray, fontsize: float) -> None:
    """Tick labels at the positions flagged in ``show`` (bool (K,)), none elsewhere."""
    where = np.flatnonzero(show)
    names = [labels[i] for i in where]
    ax.set_xticks(where, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(where, names, fontsize=fontsize)


def confusion_matrix(cm: np.ndarray, labels: list[str], highlight: list[str] | None = None) -> Any:
    """Row-normalised confusion matrix that stays readable at hundreds of classes.

    cm: counts (K, K), row = true class. Up to ``SMALL_MATRIX`` classes: data order,
    every label, the rates written in the cells. Above: classes clustered so that
    confusions form blocks near the diagonal, no cell text, a square-root colour scale
    so that rare confusions show; above ``LABEL_ALL_UP_TO`` classes only the labels in
    ``highlight`` (e.g. the most-confused classes) are written.
    """
    from matplotlib.colors import PowerNorm

    plt = _plt()
    k = len(labels)
    small = k <= SMALL_MATRIX
    order = np.arange(k) if small else class_order(cm)
    norm = row_normalise(cm)[np.ix_(order, order)]
    names = [labels[i] for i in order]
    side = float(np.clip(2.5 + 0.3 * k, 5.0, 16.0))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(
        norm, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class")
    fontsize = float(np.clip(700 / max(k, 1), 3.0, 9.0))
    if k > LABEL_ALL_UP_TO:
        wanted = set(highlight or [])
        _ticks(ax, names, np.array([n in wanted for n in names], dtype=bool), 5.0)
    else:
        _ticks(ax, names, np.ones(k, dtype=bool), fontsize)
    if small:
        _cell_texts(ax, norm, fontsize - 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    how = "" if small else ", classes clustered by confusion"
    ax.set_title(f"confusion matrix, each row sums to 1 ({k} classes{how})")
    fig.tight_layout()
    return fig


def confused_submatrix(cm: np.ndarray, labels: list[str], names: list[str]) -> Any:
    """The confusion matrix restricted to ``names`` (rates still relative to each true
    class's full count), with the rates written in: a close-up of the worst confusions."""
    index = [labels.index(n) for n in names]
    sub = row_normalise(cm)[np.ix_(index, index)]
    plt = _plt()
    side = float(np.clip(2.5 + 0.4 * len(names), 5.0, 11.0))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    ax.imshow(sub, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    _ticks(ax, names, np.ones(len(names), dtype=bool), 8.0)
    _cell_texts(ax, sub, 7.0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"close-up: the {len(names)} classes of the most-confused pairs")
    fig.tight_layout()
    return fig


def confused_pairs(pairs: list[dict[str, Any]]) -> Any:
    """Horizontal bars of the most-confused pairs (``most_confused`` output), worst on top."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, max(2.0, 0.3 * len(pairs) + 1.0)))
    names = [f"{p['true']} → {p['predicted']}" for p in pairs][::-1]
    counts = [p["count"] for p in pairs][::-1]
    # Numeric positions: class names such as "3" would otherwise be read as numbers.
    bars = ax.barh(np.arange(len(names)), counts, color="tab:red")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.bar_label(bars, [f"{p['rate']:.0%}" for p in pairs][::-1], padding=2, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("examples of the true class predicted as the other (label: share)")
    ax.set_title("most-confused pairs (true → predicted)")
    fig.tight_layout()
    return fig


def _show_image(ax: Any, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def captioned_grid(images: np.ndarray, captions: list[str], title: str, columns: int = 6) -> Any:
    """Images (n, H, W[, C]) uint8, as the model saw them, each with a caption."""
    plt = _plt()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.25), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions, strict=False):
        ax.axis("on")
        _show_image(ax, image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def per_class_f1(per_class: dict[str, dict[str, float]], show: int = 30) -> Any:
    """F1 per class, worst on top; for many classes the ``show`` worst and ``show`` best."""
    plt = _plt()
    items = sorted(per_class.items(), key=lambda kv: (kv[1]["f1"], kv[0]))
    if len(items) > 2 * show:
        items = items[:show] + [("…", {"f1": np.nan})] + items[-show:]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.2 * len(items) + 1.0)))
    names = [name for name, _ in items][::-1]
    values = [v["f1"] for _, v in items][::-1]
    colours = plt.get_cmap("RdYlGn")(np.nan_to_num(values))
    ax.barh(np.arange(len(names)), np.nan_to_num(values), color=colours)
    fontsize = float(np.clip(500 / max(len(items), 1), 5, 9))
    ax.set_yticks(np.arange(len(names)), names, fontsize=fontsize)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    shown = "" if len(per_class) <= 2 * show else f" (the {show} worst and {show} best)"
    ax.set_title(f"F1 per class, worst at the top{shown}")
    fig.tight_layout()
    return fig


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for the epochs where ``key`` has a number."""
    pairs = [(h["epoch"], h[key]) for h in history if isinstance(h.get(key), int | float)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def training_curves(history: list[dict[str, Any]]) -> Any:
    """Loss and accuracy per epoch, train against validation (metrics.json ``history``),
    and the learning rate when it changed."""
    plt = _plt()
    lr_epochs, lrs = _series(history, "lr")
    panels = 3 if len(set(lrs)) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    for ax, what in zip(axes, ("loss", "accuracy"), strict=False):
        for prefix, name in (("train", "train"), ("val", "validation")):
            epochs, values = _series(history, f"{prefix}_{what}")
            if values:
                ax.plot(epochs, values, marker="." if len(values) < 30 else None, label=name)
        ax.set_title(what)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if panels == 3:
        axes[2].plot(lr_epochs, lrs, color="tab:green")
        axes[2].set_yscale("log")
        axes[2].set_title("learning rate")
        axes[2].set_xlabel("epoch")
        axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _filter_image(weight: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """One filter (C, kh, kw) as a picture and the imshow arguments for it."""
    if weight.shape[0] == 3:  # an RGB filter: show its colours, scaled to 0..1
        rgb = weight.transpose(1, 2, 0)
        span = np.ptp(rgb) or 1.0
        return (rgb - rgb.min()) / span, {}
    mean = weight.mean(axis=0)
    limit = float(np.abs(mean).max()) or 1.0
    return mean, {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}


def conv_filters(weight: np.ndarray, limit: int = 64) -> Any:
    """The first conv layer's filters, weight (F, C, kh, kw): red positive, blue negative
    (each scaled to its own range); 3-channel filters in colour."""
    plt = _plt()
    shown = weight[:limit]
    columns = min(8, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, w) in enumerate(zip(axes.ravel(), shown, strict=False)):
        picture, kwargs = _filter_image(w)
        ax.imshow(picture, interpolation="nearest", **kwargs)
        ax.set_title(str(i), fontsize=7)
    f, c, kh, kw = weight.shape
    more = f" ({len(shown)} shown)" if len(shown) < f else ""
    fig.suptitle(f"first conv layer: {f} filters of {c}x{kh}x{kw}{more}", fontsize=10)
    fig.tight_layout()
    return fig


def activation_maps(
    images: np.ndarray, maps: np.ndarray, captions: list[str], filters: int = 8
) -> Any:
    """Each example (a row) and the ReLU responses of the first ``filters`` filters.

    images: uint8 (m, H, W[, C]); maps: float (m, F, H', W'), each scaled to its own max.
    """
    plt = _plt()
    shown = min(filters, maps.shape[1])
    fig, axes = plt.subplots(
        len(images), shown + 1, figsize=((shown + 1) * 1.25, len(images) * 1.35), squeeze=False
    )
    for row, (image, caption) in enumerate(zip(images, captions, strict=True)):
        _show_image(axes[row, 0], image)
        axes[row, 0].set_ylabel(caption, fontsize=7)
        for j in range(shown):
            ax = axes[row, j + 1]
            ax.imshow(maps[row, j], cmap="magma", vmin=0, vmax=float(maps[row, j].max()) or 1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"filter {j}", fontsize=7)
    fig.suptitle("first-layer activation maps (ReLU, each map scaled to its maximum)", fontsize=10)
    fig.tight_layout()
    return fig


def reliability_diagram(stats: dict[str, np.ndarray], ece: float) -> Any:
    """Accuracy against confidence per bin (``calibration_bins`` output), with the
    diagonal of perfect calibration, and how many examples fall in each bin."""
    plt = _plt()
    edges, count = stats["edges"], stats["count"]
    width = np.diff(edges)
    left = edges[:-1]
    used = count > 0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.0, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(
        left[used],
        stats["accuracy"][used],
        width[used],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    gap = stats["confidence"][used] - stats["accuracy"][used]
    top.bar(
        left[used],
        gap,
        width[used],
        bottom=stats["accuracy"][used],
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"reliability diagram (ECE {ece:.3f}, {len(count)} bins)")
    bottom.bar(left, count, width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("examples")
    fig.tight_layout()
    return fig
