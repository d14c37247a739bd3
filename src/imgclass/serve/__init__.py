"""Serving: a FastAPI app (REST API + web page) over ONNX Runtime bundles.

Nothing here imports torch, scikit-learn or matplotlib.
"""
