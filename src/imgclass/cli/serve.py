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
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import json

    import uvicorn

    from imgclass.bundle import load_bundle
    from imgclass.errors import ConfigError
    from imgclass.serve.settings import ServeSettings

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
    settings = ServeSettings(**overrides)
    if not settings.models:
        raise ConfigError("no model to serve: pass --model RUNDIR/bundle (or set IMGCLASS_MODELS)")
    for path in settings.models:
        load_bundle(path)  # fail fast, with a clear message, before the server starts
    from imgclass.feedback.store import FeedbackStore

    # Open (and migrate) the feedback database once here: a bad URL fails before serving.
    FeedbackStore.from_path_or_url(settings.feedback_url or settings.feedback_db).close()
    # Workers are separate processes: hand them the settings through the environment.
    os.environ["IMGCLASS_MODELS"] = json.dumps(settings.models)
    os.environ["IMGCLASS_FEEDBACK_DB"] = str(settings.feedback_db)
    if settings.feedback_url:
        os.environ["IMGCLASS_FEEDBACK_URL"] = settings.feedback_url
    else:
        os.environ.pop("IMGCLASS_FEEDBACK_URL", None)
    print(f"serving {', '.join(settings.models)} on http://{settings.host}:{settings.port}/")
    uvicorn.run(
        "imgclass.serve.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        http="imgclass.serve.protocol:NoDelayH11Protocol",
        log_level="warning",
    )
    return 0
