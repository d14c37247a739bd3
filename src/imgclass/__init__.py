"""imgclass: build image classifiers for sketches, digits and photos, and serve them."""

__version__ = "0.1.0"
