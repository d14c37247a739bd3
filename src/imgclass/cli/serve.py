"""``imgclass serve``: the REST API and the web page."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models through a REST API and a web page",
        description="Serve one or more bundles: POST /v1/predict, GET /v1/models, "
        "POST /v1/feedback, the page at /, OpenAPI at /docs. Settings can also come "
        "from IMGCLASS_* environment variables.",
        epilog="examples:\n  imgclass serve --model work/runs/cnn/bundle --port 8000\n"
        "  imgclass serve --registry doodles --poll-seconds 5 --workers 2\n"
        "  IMGCLASS_ADMIN_TOKEN=secret imgclass serve --registry doodles\n"
        "  curl -X POST -H 'Authorization: Bearer secret' localhost:8000/v1/admin/reload",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="BUNDLE",
        help="bundle folder (repeat for several; the first is the default)",
    )
    p.add_argument("--host", default=None, help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default 8000")
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument(
        "--feedback-db",
        metavar="PATH_OR_URL",
        help="feedback database: an SQLite file (default work/feedback.sqlite3) or a "
        "SQLAlchemy URL such as postgresql+psycopg://user:pw@host/db",
    )
    p.add_argument(
        "--registry",
        metavar="NAME",
        help="serve NAME@champion from the model registry (see `imgclass models`) and "
        "switch to a new champion without a restart (also IMGCLASS_REGISTRY)",
    )
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the registry's MLflow store (default: $MLFLOW_TRACKING_URI, else "
        "work/mlflow/mlflow.db)",
    )
    p.add_argument(
        "--poll-seconds",
        type=float,
        metavar="S",
        help="with --registry: check the champion every S seconds (default 10; 0: only "
        "at start and on POST /v1/admin/reload). Each worker polls on its own",
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import json

    import uvicorn

    from imgclass.bundle import load_bundle
    from imgclass.errors import ConfigError
    from imgclass.serve.protocol import with_header_timeout

    overrides: dict[str, Any] = {}
    if args.model:
        overrides["models"] = args.model
    for key in ("host", "port"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.feedback_db is not None:  # a URL has "://"; anything else is an SQLite file
        is_url = "://" in args.feedback_db
        overrides["feedback_url"] = args.feedback_db if is_url else None
        if not is_url:
            overrides["feedback_db"] = args.feedback_db
    overrides.update(registry_overrides(args))
    settings = load_settings(overrides)
    if not settings.models and not settings.registry:
        raise ConfigError(
            "no model to serve: pass --model RUNDIR/bundle or --registry NAME "
            "(or set IMGCLASS_MODELS / IMGCLASS_REGISTRY)"
        )
    for path in settings.models:
        load_bundle(path)  # fail fast, with a clear message, before the server starts
    from imgclass.feedback.store import FeedbackStore

    # Open (and migrate) the feedback database once here: a bad URL fails before serving.
    FeedbackStore.from_path_or_url(settings.feedback_url or settings.feedback_db).close()
    # Workers are separate processes: hand them the settings through the environment.
    os.environ["IMGCLASS_MODELS"] = json.dumps(settings.models)
    served = list(settings.models)
    if settings.registry:
        served.insert(0, prepare_registry(settings))
    os.environ["IMGCLASS_FEEDBACK_DB"] = str(settings.feedback_db)
    if settings.feedback_url:
        os.environ["IMGCLASS_FEEDBACK_URL"] = settings.feedback_url
    else:
        os.environ.pop("IMGCLASS_FEEDBACK_URL", None)
    print(f"serving {', '.join(served)} on http://{settings.host}:{settings.port}/")
    uvicorn.run(
        "imgclass.serve.worker:create_worker_app",  # workers end when this process does
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        http=with_header_timeout(settings.header_timeout_seconds),
        log_level="warning",
    )
    return 0


def load_settings(overrides: dict[str, Any]) -> Any:
    """ServeSettings from the arguments and IMGCLASS_* variables; ConfigError naming the
    first bad setting (and its variable) instead of pydantic's report."""
    from pydantic import ValidationError

    from imgclass.errors import ConfigError
    from imgclass.serve.settings import ServeSettings

    try:
        return ServeSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"setting {field} (IMGCLASS_{field.upper()}): {first.get('msg', 'invalid')}, "
            f"got {first.get('input')!r}"
        ) from None


def registry_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """ServeSettings fields from --registry, --tracking-uri and --poll-seconds."""
    from imgclass.errors import ConfigError

    out: dict[str, Any] = {}
    if args.registry is not None:
        out["registry"] = args.registry
    if args.tracking_uri is not None:
        out["tracking_uri"] = args.tracking_uri
    if args.poll_seconds is not None:
        if args.poll_seconds < 0:
            raise ConfigError("--poll-seconds must be 0 (no polling) or more")
        out["registry_poll_seconds"] = args.poll_seconds
    return out


def prepare_registry(settings: Any) -> str:
    """Fetch NAME@champion into the cache once, before the server starts: an unknown
    name, no champion or a bundle that does not verify fails here with a clear message,
    and the workers then find the bundle in the cache. The workers get the resolved
    store and cache through the environment. Returns what is served, for the banner."""
    import json

    from imgclass.experiments.model_registry import ModelRegistry

    registry = ModelRegistry(settings.tracking_uri)
    info = registry.get(settings.registry, "champion")
    cache = settings.registry_cache.resolve()
    registry.fetch_bundle(settings.registry, info.version, cache_dir=cache)
    os.environ["IMGCLASS_REGISTRY_START"] = json.dumps(info.to_dict())
    os.environ["IMGCLASS_REGISTRY"] = settings.registry
    os.environ["IMGCLASS_TRACKING_URI"] = registry.uri
    os.environ["IMGCLASS_REGISTRY_POLL_SECONDS"] = str(settings.registry_poll_seconds)
    os.environ["IMGCLASS_REGISTRY_CACHE"] = str(cache)
    return f"{settings.registry}@champion (version {info.version}, from {registry.uri})"
