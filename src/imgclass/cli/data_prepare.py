"""``imgclass data prepare | info | show``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.errors import ConfigError

SPLIT_NAMES = ("train", "valid", "test")

EPILOG = """examples:
  imgclass data prepare --builtin doodles --out work/doodles
  imgclass data prepare cat.npy dog.npy --out work/cats-dogs --per-class 10000
  imgclass data prepare mnist/*.gz --out work/mnist
  imgclass data prepare fashion/*.gz --out work/fashion --class-names names.txt
  imgclass data prepare photos/ --out work/photos --split 70/10/20 --recipe photo
"""


def register(sub: Any) -> None:
    from imgclass.data.sources import FORMATS

    p = sub.add_parser(
        "prepare",
        help="read inputs in any supported format into a prepared dataset",
        description="Read inputs (files or folders) into a compressed, chunked prepared dataset "
        "with a stratified, deterministic train/valid/test split.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files or folders to read")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument(
        "--builtin",
        choices=["digits", "doodles", "doodle-strokes"],
        help="use a small real dataset shipped with imgclass instead of INPUTs",
    )
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the file names)")
    p.add_argument("--categories", help="comma-separated class names to keep")
    p.add_argument(
        "--class-names",
        metavar="NAMES",
        help="names of the numbered labels 0, 1, 2... of IDX, CSV or npz inputs: "
        "comma-separated, or a file with one name a line",
    )
    p.add_argument(
        "--per-class", type=int, help="keep at most N examples per class (the first ones)"
    )
    p.add_argument(
        "--recipe",
        help="normalisation recipe name (none, mnist, centroid, sketch, "
        "photo, photo-clean) or a JSON file (default: chosen from the format)",
    )
    p.add_argument("--size", type=int, help="output image side in pixels (default: the recipe's)")
    p.add_argument(
        "--split", default="80/10/10", help="train/valid/test percentages (default 80/10/10)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and shuffle (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning")
    p.add_argument(
        "--crop-to-box", action="store_true", help="Stanford Dogs: crop to the bounding box"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    _add_limit_flags(p)
    p.set_defaults(func=run_prepare)

    i = sub.add_parser(
        "info",
        help="describe a prepared dataset",
        description="Classes, counts per split and class, shape, size, recipe, sources.",
    )
    i.add_argument("dir", help="prepared dataset folder")
    i.add_argument("--json", action="store_true", help="one JSON object on stdout")
    i.set_defaults(func=run_info)

    s = sub.add_parser(
        "show",
        help="save a labelled grid of examples per class",
        description="Save a PNG grid: one row per class, a few examples each.",
    )
    s.add_argument("dir", help="prepared dataset folder")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--split", help="which split to show (default: train, or the first one)")
    s.add_argument("--per-class", type=int, default=8, help="examples per class (default 8)")
    s.add_argument("--classes", help="comma-separated classes to show (default: the first 40)")
    s.set_defaults(func=run_show)


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    """Flags that raise the limits each reader checks before allocating (``ReadLimits``)."""
    from imgclass.data.limits import DEFAULT_LIMITS as D
    from imgclass.data.limits import format_bytes, parse_bytes

    g = p.add_argument_group(
        "input limits",
        "Each input is checked against these before anything is allocated, so that a\n"
        "file declaring far more than it holds (a zip bomb, a crafted pickle, a gigapixel\n"
        "image) is refused at once. The defaults are far above any real dataset; sizes\n"
        "take K, M, G suffixes (powers of 1024).",
    )
    g.add_argument(
        "--max-image-pixels",
        metavar="N",
        type=_positive(int),
        default=D.max_image_pixels,
        help=f"pixels of one image, from its header (default {D.max_image_pixels:,}; "
        "Pillow refuses past 178,956,970 whatever this says); photos under it are decoded "
        "only as large as the recipe needs",
    )
    g.add_argument(
        "--max-array-bytes",
        metavar="SIZE",
        type=_positive(parse_bytes),
        default=D.max_array_bytes,
        help="an array read whole: npz labels, a sketch-rnn split with what its pickle "
        f"rebuilds (default {format_bytes(D.max_array_bytes)})",
    )
    g.add_argument(
        "--max-compression-ratio",
        metavar="R",
        type=_positive(float),
        default=D.max_compression_ratio,
        help="how far streamed images (an npz member, a gzipped IDX file) may inflate "
        f"(default {D.max_compression_ratio:g} to 1; real image data stays under 160)",
    )
    g.add_argument(
        "--max-line-bytes",
        metavar="SIZE",
        type=_positive(parse_bytes),
        default=D.max_line_bytes,
        help=f"one ndjson or CSV line (default {format_bytes(D.max_line_bytes)})",
    )


def _positive(parse: Any) -> Any:
    """An argparse type: ``parse(text)``, which must be positive."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _limits(args: argparse.Namespace) -> Any:
    from imgclass.data.limits import ReadLimits

    return ReadLimits(
        max_image_pixels=args.max_image_pixels,
        max_array_bytes=args.max_array_bytes,
        max_compression_ratio=args.max_compression_ratio,
        max_line_bytes=args.max_line_bytes,
    )


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _recipe(text: str | None) -> str | dict[str, Any] | None:
    if text and text.endswith(".json"):
        from imgclass.safejson import JSONRefused, loads

        try:
            recipe: dict[str, Any] = loads(Path(text).read_bytes())  # bounded nesting
            return recipe  # a recipe from anywhere
        except (OSError, JSONRefused) as exc:
            raise ConfigError(f"--recipe {text}: cannot read it ({exc})") from None
    return text


def _class_names(text: str | None) -> list[str] | None:
    """--class-names: a file (one name a line) when one has that name, else a,b,c."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--class-names {text}: cannot read it ({exc})") from None
        return [line.strip() for line in lines if line.strip()]
    if "," not in text:
        raise ConfigError(
            f"--class-names {text}: no such file (give the names as a,b,c or in a file, "
            "one name a line)"
        )
    return [t.strip() for t in text.split(",")]


def run_prepare(args: argparse.Namespace) -> int:
    from imgclass.data.builtin import get_builtin
    from imgclass.data.prepare import PrepareOptions, prepare
    from imgclass.data.split import parse_split

    inputs, extra, recipe = list(args.inputs), {}, _recipe(args.recipe)
    reason = "given with --recipe" if recipe is not None else None
    if args.builtin:
        if inputs:
            raise ConfigError("give either INPUT files or --builtin, not both")
        builtin = get_builtin(args.builtin)
        inputs = [str(builtin.path)]
        reason = reason or f"the built-in {builtin.name} dataset's recipe"
        recipe = recipe or builtin.recipe
        extra = {
            "builtin": builtin.name,
            "licence": builtin.licence,
            "description": builtin.description,
        }
    if not inputs:
        raise ConfigError("no INPUT given (or use --builtin digits|doodles)")
    options = PrepareOptions(
        inputs=inputs,
        out=args.out,
        format=args.format,
        categories=_csv(args.categories),
        per_class=args.per_class,
        recipe=recipe,
        split=parse_split(args.split),
        seed=args.seed,
        size=args.size,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        crop_to_box=args.crop_to_box,
        class_names=_class_names(args.class_names),
        recipe_reason=reason,
        limits=_limits(args),
        extra_manifest=extra,
    )
    out = prepare(options)
    return _print_info(out, args.json, brief=True)


def run_info(args: argparse.Namespace) -> int:
    return _print_info(Path(args.dir), args.json, brief=False)


def _print_info(path: Path, as_json: bool, brief: bool) -> int:
    from imgclass.data.dedupe import describe
    from imgclass.data.store import PreparedDataset

    with PreparedDataset.open(path) as ds:
        m = ds.manifest
        size = ds.nbytes_on_disk()
    if as_json:
        print(json.dumps({**m, "path": str(path), "bytes_on_disk": size}))
        return 0
    counts = m["counts"]
    print(
        f"{path}: {_plural(len(m['classes']), 'class', 'classes')}, "
        f"images {tuple(m['image_shape'])}, "
        f"recipe {m['recipe']['name']}, {size / 1e6:.1f} MB on disk"
    )
    print("  " + ", ".join(f"{s} {counts[s]:,}" for s in counts))
    _print_recipe(m)
    print(f"  duplicates: {describe(m.get('duplicates'))}")
    if brief:
        return 0
    print(
        f"  strokes: {'yes (' + str(m.get('stroke_kind')) + ')' if m.get('has_strokes') else 'no'}"
    )
    _print_sources(m)
    if m.get("licence"):
        print(f"  licence: {m['licence']}")
    _print_class_table(m)
    return 0


def _print_recipe(m: dict[str, Any]) -> None:
    recipe = m["recipe"]
    print(f"  recipe {recipe['name']}: {recipe.get('doc') or 'custom steps'}")
    if m.get("recipe_reason"):
        print(f"    why: {m['recipe_reason']}")


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _print_class_table(m: dict[str, Any], limit: int = 30) -> None:
    """Counts per split and class; past ``limit`` classes, the first and last few
    and the spread (fewest, median, most) per split."""
    per, classes = m["counts_per_class"], m["classes"]
    width = min(30, max(len(c) for c in classes))
    print(f"  {'class':<{width}} {'train':>8} {'valid':>8} {'test':>8}")
    shown = classes if len(classes) <= limit else classes[: limit - 5] + classes[-5:]
    for i, c in enumerate(shown):
        if len(classes) > limit and i == limit - 5:
            print(f"  {'…':<{width}} ({len(classes) - limit} more classes)")
        cells = " ".join(f"{per[s].get(c, 0):>8,}" for s in SPLIT_NAMES)
        print(f"  {c[:width]:<{width}} {cells}")
    if len(classes) > limit:
        print(f"  {'-' * width} {'-' * 26}")
        for label, fn in (("fewest", np.min), ("median", np.median), ("most", np.max)):
            cells = " ".join(
                f"{int(fn([per[s].get(c, 0) for c in classes])):>8,}" for s in SPLIT_NAMES
            )
            print(f"  {label:<{width}} {cells}")


def _print_sources(m: dict[str, Any], limit: int = 5) -> None:
    sources = m["sources"]
    for src in sources[:limit]:
        print(f"  source {src['path']} ({src['format']}) sha256 {src['sha256'][:16]}…")
    if len(sources) > limit:
        print(f"  … and {len(sources) - limit} more sources (all of them with --json)")


def run_show(args: argparse.Namespace) -> int:
    from imgclass.data.show import save_grid
    from imgclass.data.store import PreparedDataset

    if args.per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {args.per_class}")
    with PreparedDataset.open(args.dir) as ds:
        split = args.split or ("train" if "train" in ds.splits else ds.splits[0])
        out = save_grid(ds, args.out, split, args.per_class, _csv(args.classes))
        m = ds.manifest
    print(f"wrote {out} ({split} split, as stored: after the recipe)")
    _print_recipe(m)
    return 0
