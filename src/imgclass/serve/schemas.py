"""The API's request and response bodies: what the OpenAPI page documents.

Kept apart from the internal types (``Predictor``, the feedback store's rows) so that a
change inside the server does not silently change the API. Answers that the hot path
serialises by hand (``/v1/predict``, ``/v1/predict/batch``) are still declared here as
the routes' ``response_model``: the page documents them, nothing validates them again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from imgclass.serve.inputs import STROKES_SCHEMA

Strokes = Annotated[list[Any], WithJsonSchema(STROKES_SCHEMA)]

# A vertical bar drawn on a 28 x 28 canvas, as the page sends it (92 bytes of PNG)
EXAMPLE_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAI0lEQVR42mP8z4AbMDHQ"
    "RJIFhcfIwPCf9naOSo4gSUbaJGoAhfEDN+rzBhgAAAAASUVORK5CYII="
)
# Two strokes of a "4" in Quick, Draw! form: [[x...], [y...]] each
EXAMPLE_STROKES = [[[60, 20, 90], [10, 120, 120]], [[70, 70], [60, 250]]]
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "strokes": {
        "summary": "a drawing as strokes",
        "value": {"strokes": EXAMPLE_STROKES},
    },
    "image": {
        "summary": "an image as base64 (a canvas export or any PNG/JPEG, data URL or not)",
        "value": {"image_base64": EXAMPLE_PNG},
    },
}


class Problem(BaseModel):
    """A refusal (4xx): one line naming what is wrong, and for a 422 every error found."""

    detail: str = Field(description="what is wrong, and where (field, item)")
    errors: list[dict[str, Any]] | None = None


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "too large"},
    415: {"model": Problem, "description": "not an image, or not JSON or multipart"},
    422: {"model": Problem, "description": "invalid input"},
}


# --- predictions ------------------------------------------------------------------------


class Guess(BaseModel):
    label: str
    probability: float


class PredictJSON(BaseModel):
    """Exactly one of ``image_base64`` (a canvas export or any image, base64 or data URL)
    and ``strokes`` (Quick, Draw! form, any coordinate range, time optional)."""

    image_base64: str | None = None
    strokes: Strokes | None = None


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Guess]
    timing_ms: dict[str, float] = Field(default_factory=dict)
    input: list[list[int]] | None = Field(
        default=None, description="the model's input image, with include_input"
    )


class BatchRequest(BaseModel):
    items: list[PredictJSON]


class BatchResult(BaseModel):
    predictions: list[Guess]
    timing_ms: dict[str, float]


class BatchResponse(BaseModel):
    model: str
    version: str
    results: list[BatchResult] = Field(description="one per item, in the items' order")


# --- models -----------------------------------------------------------------------------


class ModelInfo(BaseModel):
    """A loaded model as ``Predictor.describe`` tells it."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    family: str | None = None
    model: str | None = Field(default=None, description="the architecture, e.g. cnn-small")
    classes: list[str]
    input_kind: str = Field(description="image or sequence")
    input: dict[str, Any] = Field(description="the model-input spec from preprocess.json")
    recipe: str | None = None
    metrics: dict[str, Any] = Field(description="test and valid metrics from training")
    quantization: dict[str, Any] | None = Field(
        default=None, description="int8 bundles: both models' accuracy and latency"
    )
    registry: dict[str, Any] | None = Field(
        default=None, description="the registry version, when served from a registry"
    )
    browser: dict[str, Any] | None = Field(
        default=None,
        description="for the page: model_url, sha256, bytes, recipe, and refusal (why the "
        "page cannot run it itself, or null)",
    )
    trained: str | None = Field(default=None, description="the day it was trained, YYYY-MM-DD")
    trained_on: str | None = Field(default=None, description="the dataset's folder name")
    reads: Literal["drawings", "photos"] = Field(
        default="drawings", description="what the model was trained to read"
    )
    calibration: dict[str, Any] | None = Field(
        default=None,
        description="the temperature the model's probabilities are calibrated with "
        "(model.json's calibration; None for bundles made before calibration)",
    )


class ModelList(BaseModel):
    models: list[ModelInfo]
    admin: bool = Field(
        default=False, description="whether admin actions (review, retrain) are enabled"
    )
    hedge_below: float = Field(
        default=0.5, description="the web page says 'maybe X?' when X's probability is lower"
    )


class ClassScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class ModelReport(BaseModel):
    """Metrics of a model on its own held-out split (``evaluate.metrics``)."""

    model_config = ConfigDict(extra="allow")

    split: str
    n: int
    accuracy: float
    top3_accuracy: float
    map3: float
    macro_f1: float
    ece: float
    temperature: float | None = Field(
        default=None, description="the temperature the model's probabilities are calibrated with"
    )
    ece_uncalibrated: float | None = Field(
        default=None, description="the ECE of the model's probabilities before calibration"
    )
    per_class: dict[str, ClassScores]
    confusion: list[list[int]] = Field(description="K x K counts, row = true class")


class Example(BaseModel):
    index: int = Field(description="the example's index in the split")
    label: str = Field(description="the true label")
    image: str = Field(description="a PNG as base64")
    predictions: list[Guess] = Field(description="the model's top 2")


class ConfusionCell(BaseModel):
    examples: list[Example]


# --- feedback ---------------------------------------------------------------------------

Status = Literal["new", "accepted", "rejected"]
Source = Literal["page", "api", "game"]
DRAWING_ID_PATTERN = r"^[\w\-.:]{1,64}$"
MAX_IDS = 10_000
MAX_ID = 2**63 - 1  # the largest id a database integer column holds
IdItem = Annotated[int, Field(ge=1, le=MAX_ID)]


class ShownGuess(BaseModel):
    """A guess the page showed, sent back with the feedback."""

    label: str = Field(max_length=100)
    probability: float = Field(ge=0.0, le=1.0)


class FeedbackInput(BaseModel):
    """The same body as ``/v1/predict``: ``strokes`` and/or ``image_base64``."""

    model_config = ConfigDict(extra="forbid")

    strokes: Strokes | None = None
    image_base64: str | None = None


class FeedbackIn(BaseModel):
    input: FeedbackInput
    label: str = Field(min_length=1, max_length=100, description="the right answer")
    model: str | None = Field(default=None, max_length=200, description="default: the first")
    predicted: list[ShownGuess] | None = Field(
        default=None, max_length=20, description="top-k shown"
    )
    client_id: str | None = Field(
        default=None, pattern=r"^[\w\-.:]{1,100}$", description="an anonymous client id"
    )
    drawing_id: str | None = Field(
        default=None,
        pattern=DRAWING_ID_PATTERN,
        description="the client's id for this drawing or picture: one drawing gets one "
        "answer, and a second submission with the same id replaces the first",
    )
    source: Literal["page", "api"] = Field(
        default="api", description="who sends it: the web page or another API client"
    )


class FeedbackOut(BaseModel):
    id: int
    duplicate: bool = Field(description="the same input with the same label was sent before")


class Submission(BaseModel):
    id: int
    created: str | None
    model: str | None
    version: str | None
    input_kind: str
    predicted: list[dict[str, Any]] | None
    label: str
    status: str
    client_id: str | None
    content_hash: str
    reviewed: str | None
    source: Source = "api"
    drawing_id: str | None = None
    prompt: str | None = Field(default=None, description="game rounds: the word asked")
    recognized: bool | None = Field(
        default=None, description="game rounds: whether the model recognised it in time"
    )


class SubmissionList(BaseModel):
    items: list[Submission]
    total: int = Field(description="submissions matching the filters")
    limit: int
    offset: int


class SubmissionDetail(Submission):
    strokes: list[Any] | None = None
    image_base64: str | None = None


class FeedbackStats(BaseModel):
    status: dict[str, int] = Field(description="submissions per status")
    label: dict[str, dict[str, int]] = Field(description="per label, submissions per status")


class Review(BaseModel):
    ids: list[IdItem] = Field(min_length=1, max_length=MAX_IDS)
    status: Status


class Ids(BaseModel):
    ids: list[IdItem] = Field(min_length=1, max_length=MAX_IDS)


class StatusSet(BaseModel):
    id: int
    status: Status


class Changed(BaseModel):
    changed: int = Field(description="submissions found and changed")


class Deleted(BaseModel):
    deleted: int


# --- the game ---------------------------------------------------------------------------


class GameWords(BaseModel):
    """The words of one game and its rules."""

    model: str
    words: list[str] = Field(description="distinct words to draw, one per round")
    round_seconds: float = Field(description="time to draw each word")
    win_probability: float = Field(
        description="a round is won when the model's top guess is the word with at least "
        "this probability"
    )


class GameRound(BaseModel):
    """One round's drawing, labelled with the word asked."""

    model_config = ConfigDict(extra="forbid")

    word: str = Field(min_length=1, max_length=100, description="the word asked")
    strokes: Strokes = Field(description="the drawing, [[x...], [y...], [t ms...]] per stroke")
    recognized: bool | None = Field(
        default=None,
        description="the page's view of whether the model recognised it (only logged when"
        " it differs: the server decides from the strokes)",
    )
    predicted: list[ShownGuess] | None = Field(
        default=None,
        max_length=20,
        description="the guesses the page showed (not stored: the server's own are)",
    )
    model: str | None = Field(default=None, max_length=200, description="default: the first")
    drawing_id: str | None = Field(default=None, pattern=DRAWING_ID_PATTERN)
    client_id: str | None = Field(default=None, pattern=r"^[\w\-.:]{1,100}$")


class GameRoundOut(FeedbackOut):
    """The stored round, with the server's verdict on it."""

    recognized: bool = Field(
        description="the served model's top guess for the strokes is the word, at least"
        " the game's win probability sure"
    )
    predicted: list[ShownGuess] = Field(description="the served model's top 3 guesses")


# --- admin: reload and retrain ----------------------------------------------------------


class Reloaded(BaseModel):
    model: str
    version: int | None = Field(description="the registry version served now")
    previous: int | None = Field(description="the one served before the check")
    changed: bool


class RetrainRequest(BaseModel):
    """Settings of one retrain (each left out takes the command's default)."""

    epochs: int | None = Field(default=None, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0, le=1)
    replay_ratio: float | None = Field(default=None, ge=0, le=100)
    freeze_features: bool = False
    tolerance: float | None = Field(default=None, ge=0, le=100)
    test_fraction: float | None = Field(default=None, gt=0, lt=1)
    promote: bool = True
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    game_weight: float | None = Field(
        default=None, ge=0, le=100, description="copies of each game round (0: leave out)"
    )

    def arguments(self) -> list[str]:
        """The matching ``imgclass retrain`` arguments."""
        args: list[str] = []
        keys = ("epochs", "lr", "replay_ratio", "tolerance", "test_fraction", "seed", "game_weight")
        for key in keys:
            value = getattr(self, key)
            if value is not None:
                args += [f"--{key.replace('_', '-')}", str(value)]
        if self.freeze_features:
            args.append("--freeze-features")
        if not self.promote:
            args.append("--no-promote")
        return args


class JobStarted(BaseModel):
    job: str
    status: str


class JobState(BaseModel):
    id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    created: str
    started: str | None = None
    cancel_requested: str | None = Field(default=None, description="when a cancel was asked")
    finished: str | None = None
    args: list[str] = []
    returncode: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = Field(
        default=None, description="imgclass retrain --json output"
    )
    log_tail: list[str] = []
