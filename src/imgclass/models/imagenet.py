"""The 1,000 ImageNet-1k classes, and matching dataset class names to them.

``imagenet_classes.txt`` (beside this file) lists, in the order of a pretrained
classifier's output rows, each class's WordNet id and its names, e.g.
``n02088094<TAB>Afghan hound, Afghan``. It comes from timm's
``timm/data/_info/imagenet_synset_to_lemma.txt`` (Apache-2.0), in the order of
``imagenet_synsets.txt``.

Matching lets a transfer model start from the pretrained head's rows for the
classes ImageNet already knows (the 120 Stanford Dogs breeds are ImageNet
classes: indices 151-268 and 273-275).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_WNID = re.compile(r"^(n\d{8})(?:[-_ ]|$)")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(wnid, names) for the 1,000 classes, index = output row of an ImageNet head."""
    text = resources.files("imgclass.models").joinpath("imagenet_classes.txt").read_text()
    rows = []
    for line in text.splitlines():
        wnid, _, names = line.partition("\t")
        rows.append((wnid, tuple(n.strip() for n in names.split(","))))
    return tuple(rows)


def normalise_name(name: str) -> str:
    """``Afghan_hound``, ``afghan-hound`` and ``Afghan hound`` all become ``afghan hound``."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


@lru_cache(maxsize=1)
def _lookup() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    by_wnid: dict[str, int] = {}
    by_first: dict[str, int] = {}
    by_any: dict[str, int] = {}
    for index, (wnid, names) in enumerate(imagenet_classes()):
        by_wnid[wnid] = index
        by_first.setdefault(normalise_name(names[0]), index)
        for name in names:
            by_any.setdefault(normalise_name(name), index)
    return by_wnid, by_first, by_any


def match_imagenet(class_names: list[str]) -> list[int | None]:
    """The ImageNet index of each class name, or None where ImageNet lacks it.

    A leading WordNet id decides (``n02088094-Afghan_hound``, Stanford Dogs' folder
    names); otherwise the name is compared, case and separators ignored, with each
    class's first name and then with any of its names (``afghan_hound``, Kaggle's).
    A name shared by two ImageNet classes (``crane``) takes the first of them.
    """
    by_wnid, by_first, by_any = _lookup()
    out: list[int | None] = []
    for name in class_names:
        wnid = _WNID.match(name.strip())
        if wnid and wnid.group(1) in by_wnid:
            out.append(by_wnid[wnid.group(1)])
            continue
        key = normalise_name(name.strip()[wnid.end() :] if wnid else name)
        out.append(by_first.get(key, by_any.get(key)))
    return out
