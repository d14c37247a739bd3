"""Prometheus metrics: requests, errors and latency per route (one registry per app)."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Route

UNMATCHED = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imgclass_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imgclass_request_seconds",
            "request latency",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.predictions = Counter(
            "imgclass_predictions_total", "predictions", ["model", "input"], registry=self.registry
        )
        self.model_latency = Histogram(
            "imgclass_model_seconds",
            "model time per prediction",
            ["model"],
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=self.registry,
        )

        self.work_queue = Gauge(
            "imgclass_work_queue",
            "requests whose CPU work is running or waiting for a worker thread",
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Mapping[str, Any], root_path: str) -> str:
    """The route template a finished request matched, for the ``route`` label: the full
    template (``/v1/feedback/{id}``, never the id itself), a mount's path (``/static``),
    or ``unmatched``. ``root_path`` is the scope's ``root_path`` before the app ran.

    FastAPI puts the matched route in ``scope["route"]``, but a route of a router included
    in another keeps the template relative to its own router (``/feedback/{id}``), so the
    prefix is taken from the request path: as many leading segments as the template lacks.
    Plain routes such as ``/docs`` set no ``scope["route"]``: they are recognised by path.
    """
    mounted: str = scope.get("root_path", root_path)
    if mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path) :]  # a mount (StaticFiles) changed the root path
    path: str = scope.get("path", "")[len(root_path) :]
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str) and template:
        return _with_prefix(path, template)
    if "endpoint" in scope and path in _plain_paths(scope.get("app")):
        return path
    return UNMATCHED


def _with_prefix(path: str, template: str) -> str:
    """``template`` behind the leading segments of ``path`` that it does not cover."""
    if ":path}" in template:  # spans several segments: the prefix cannot be counted
        return template
    have = path.rstrip("/").count("/")
    need = template.rstrip("/").count("/")
    if have <= need:
        return template
    prefix = "/".join(path.split("/")[: have - need + 1])
    return prefix + template if template != "/" else prefix


def _plain_paths(app: Any) -> frozenset[str]:
    """The paths of the app's own routes without parameters (``/docs``, ``/openapi.json``),
    worked out on the app's first request."""
    if app is None:
        return frozenset()
    paths = _PLAIN_PATHS.get(app)
    if paths is None:
        routes = getattr(app, "routes", [])
        paths = frozenset(r.path for r in routes if isinstance(r, Route) and not r.param_convertors)
        _PLAIN_PATHS[app] = paths
    return paths


_PLAIN_PATHS: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()
