"""The real datasets shipped inside the package, for offline use: ``--builtin NAME``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgclass.errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "builtin"
QUICKDRAW_LICENCE = (
    "Quick, Draw! dataset by Google, CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
)
MNIST_LICENCE = "MNIST by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, CC BY-SA 3.0"


@dataclass(frozen=True)
class Builtin:
    name: str
    file: str
    recipe: str
    description: str
    licence: str

    @property
    def path(self) -> Path:
        return BUILTIN_DIR / self.file


BUILTINS = {
    "digits": Builtin(
        "digits",
        "digits.npz",
        "mnist",
        "2,000 MNIST training digits and 500 test digits (MNIST's own test split)",
        MNIST_LICENCE,
    ),
    "doodles": Builtin(
        "doodles",
        "doodles.npz",
        "sketch",
        "1,600 real Quick, Draw! bitmaps: 80 for each of 20 Pictionary categories",
        QUICKDRAW_LICENCE,
    ),
    "doodle-strokes": Builtin(
        "doodle-strokes",
        "doodles_strokes.ndjson.gz",
        "sketch",
        "raw Quick, Draw! strokes of the 20 Pictionary categories",
        QUICKDRAW_LICENCE,
    ),
}


def get_builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise ConfigError(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    builtin = BUILTINS[name]
    if not builtin.path.exists():
        raise ConfigError(f"built-in data file {builtin.path} is missing from the installation")
    return builtin
