"""What the page needs to run a model itself: whether it can, and the model's file.

The page (static/prep.js + static/infer.js) runs image models with onnxruntime-web
(WebAssembly, vendored under static/vendor/onnxruntime-web) and prepares their input
with a JavaScript port of the renderer and of the drawing recipe ops. A model qualifies
when it reads 1-channel images, every step of its recipe has a port (``BROWSER_OPS``,
the same list as ``OPS`` in prep.js; tests/serve/test_browser_model.py keeps them
equal) and its file is small enough to download at page load. Anything else (photos,
stroke-sequence models, big models) is answered by the server, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgclass.bundle import Bundle

BROWSER_OPS = frozenset(
    {
        "to_gray",
        "invert_auto",
        "crop_to_ink",
        "fit_box",
        "center_of_mass",
        "centroid",
        "resize",
        "line_width",
        "fit_center",
    }
)
MAX_BROWSER_MODEL_BYTES = 8 * 1024 * 1024  # a phone on a slow line: beyond this, the server


def browser_refusal(bundle: Bundle, model_bytes: int) -> str | None:
    """Why the page cannot run this bundle itself, or None when it can."""
    spec = bundle.preprocess["input"]
    recipe = bundle.recipe
    if bundle.input_kind != "image":
        return f"{bundle.input_kind} models run on the server"
    if recipe.get("channels") != 1 or int(spec.get("channels", 1)) != 1:
        return "colour models run on the server"
    missing = [s["op"] for s in recipe.get("steps", []) if s.get("op") not in BROWSER_OPS]
    if missing:
        return f"recipe steps without a browser port: {', '.join(missing)}"
    if model_bytes > MAX_BROWSER_MODEL_BYTES:
        return f"the model ({model_bytes / 2**20:.1f} MiB) is too large to download to the page"
    return None


def browser_info(name: str, bundle: Bundle, model_bytes: int) -> dict[str, Any]:
    """The ``browser`` part of a model's description: where its file is, its sha256 (the
    ETag, and how the page notices a new model), the full recipe, and whether it runs
    in the page (``refusal`` says why not)."""
    sha = str(bundle.model_json.get("model_sha256", ""))
    return {
        "model_url": f"/v1/models/{name}/model.onnx",
        "sha256": sha,
        "bytes": model_bytes,
        "recipe": bundle.recipe,
        "refusal": browser_refusal(bundle, model_bytes),
    }
