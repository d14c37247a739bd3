"""Server settings, from arguments or ``IMGCLASS_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """Limits are on purpose small: a canvas export or a phone photo fits easily."""

    model_config = SettingsConfigDict(env_prefix="IMGCLASS_")

    models: list[str] = []  # bundle folders; the first is the default model
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 5 * 1024 * 1024
    # Decoded pixels: any canvas and a 12 MP phone photo fit (JPEGs count at the scale
    # they are decoded, 1/2 to 1/8 for big ones); more is refused (413) before decoding.
    max_image_pixels: int = 4096 * 4096
    max_strokes: int = 500
    max_points: int = 20_000
    max_batch: int = 32
    max_top_k: int = 20
    feedback_db: Path = Path("work/feedback.sqlite3")  # the simple form: an SQLite file
    feedback_url: str | None = None  # any SQLAlchemy URL (postgresql+psycopg://...); wins
    max_feedback_input_bytes: int = 2 * 1024 * 1024  # image bytes kept with a submission
    feedback_allow_new_labels: bool = False  # let people teach labels the model lacks
    # distinct new labels (not rejected) per model: in all, and from one client id
    feedback_max_new_labels: int = Field(default=50, ge=0)
    feedback_max_new_labels_per_client: int = Field(default=10, ge=0)
    admin_token: str | None = None
    # the web page says "maybe clock?" instead of "I see… clock" below this probability
    hedge_below: float = Field(default=0.5, ge=0.0, le=1.0)
    # The page's game: a round is won when the top guess is the word with at least this
    # (calibrated) probability; rounds last this long; this share of the words asked is
    # picked uniformly, the rest weighted towards the classes the model gets wrong.
    game_win_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    game_round_seconds: float = Field(default=20.0, gt=0, le=600)
    game_uniform_share: float = Field(default=0.25, ge=0.0, le=1.0)
    threads_per_model: int = 1
    # a connection must send its request headers within this many seconds (slow-header
    # clients are closed); the body and the rest are bounded by the reverse proxy in front
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    # CPU work of requests runs on a bounded thread pool, off the event loop (serve/work.py).
    work_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_queue: int = Field(default=64, ge=1)  # requests working or waiting; more: 503 + Retry-After
    request_timeout: float = Field(default=10.0, gt=0)  # seconds; not started: 503, not done: 504
    # Model registry: serve REGISTRY@champion and follow promotions and rollbacks.
    registry: str | None = None  # a registered model name (IMGCLASS_REGISTRY)
    tracking_uri: str | None = None  # the MLflow store; None: $MLFLOW_TRACKING_URI or default
    registry_poll_seconds: float = 10.0  # how often to check the champion alias; 0: never
    registry_cache: Path = Path("work/registry-cache")  # fetched bundles, per name/version
    # the champion `imgclass serve` fetched before starting (JSON of a ModelVersionInfo):
    # its workers start on that cached copy before MLflow is even imported
    registry_start: str | None = None
    # Retraining from the admin API (POST /v1/admin/retrain runs `imgclass retrain`).
    retrain_registry: str | None = None  # the registered model to retrain; None: registry
    retrain_jobs: Path = Path("work/retrain-jobs")  # one folder per job: state, log, result
    retrain_data: str | None = None  # the champion's original dataset, when not where recorded
