"""The page's game: ``GET /v1/game/words`` picks the words of a game (active learning:
mostly the classes the model gets wrong, see ``serve/game.py``), ``POST /v1/game/rounds``
stores each round's drawing in the feedback store, labelled with the word asked and
marked as a game round, with the server's own verdict on whether the model recognised
it (the page's claim is not trusted)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Query

from imgclass.errors import FeedbackError
from imgclass.serve import game
from imgclass.serve.inputs import SafeJSONRoute, parse_strokes
from imgclass.serve.predictor import BadInput, Predictor
from imgclass.serve.routes.deps import StateDep
from imgclass.serve.routes.feedback_admin import as_http
from imgclass.serve.schemas import GameRound, GameRoundOut, GameWords, ShownGuess
from imgclass.serve.state import State

router = APIRouter(prefix="/v1/game", tags=["game"], route_class=SafeJSONRoute)
log = logging.getLogger(__name__)


@router.get("/words", response_model=GameWords)
def game_words(
    state: StateDep,
    n: int = Query(6, ge=1, le=50, description="rounds: distinct words"),
    seed: int | None = Query(None, ge=0, le=2**32 - 1, description="a fixed pick, for tests"),
    model: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """Words to draw, weighted towards the classes the model recognises least (its recall
    on its test split, then the game's own lost rounds), with a share picked uniformly."""
    predictor = state.predictor(model)
    classes = list(predictor.bundle.labels)
    probabilities = word_probabilities(state, predictor.name, classes)
    words = game.pick_words(classes, probabilities, n, np.random.default_rng(seed))
    return {
        "model": predictor.name,
        "words": words,
        "round_seconds": state.settings.game_round_seconds,
        "win_probability": state.settings.game_win_probability,
    }


def word_probabilities(state: State, name: str, classes: list[str]) -> np.ndarray:
    """Each class's chance of being asked, from the test-split recall (when the model's
    dataset is on this server) and the game results in the feedback store (when it
    answers): either missing only makes the pick less informed, never fails the game."""
    recall: dict[str, float] | None = None
    try:
        per_class = state.held_out(name).report()["per_class"]
        recall = {c: float(v["recall"]) for c, v in per_class.items()}
    except BadInput as exc:
        log.debug("game words for %s without test-split recall: %s", name, exc)
    try:
        results = state.feedback.game_results(model=name)
    except FeedbackError as exc:
        log.warning("game words for %s without the game's results: %s", name, exc)
        results = {}
    errors = game.difficulty(classes, recall, results)
    return game.word_probabilities(errors, state.settings.game_uniform_share)


@router.post("/rounds", response_model=GameRoundOut)
def post_round(body: GameRound, state: StateDep) -> GameRoundOut:
    """Store one round's drawing, labelled with the word asked, as a game round (source
    ``game``). Whether the model recognised it is the server's verdict, not the page's
    claim: the served model reads the strokes stored, and the round counts as recognised
    when its top guess is the word with at least the game's win probability (what the
    page's own check does, on the same strokes: the page sends the drawing as it was
    when it won). Those guesses are stored as the model's."""
    predictor = state.predictor(body.model)
    if body.word not in predictor.bundle.labels:
        raise BadInput(f"word: {body.word!r} is not a class of model {predictor.name}")
    settings = state.settings
    drawing = parse_strokes(body.strokes, settings.max_strokes, settings.max_points, "strokes")
    guesses, recognized = verdict(predictor, drawing, body.word, settings.game_win_probability)
    if body.recognized is not None and body.recognized != recognized:
        log.info(
            "game round %s: the page said recognized=%s, the server's model says %s (%s %.3f)",
            body.drawing_id,
            body.recognized,
            recognized,
            guesses[0]["label"],
            guesses[0]["probability"],
        )
    try:
        fid, duplicate = state.feedback.add(
            label=body.word,
            input_kind="strokes",
            strokes=body.strokes,
            model=predictor.name,
            version=predictor.version,
            predicted=guesses,
            client_id=body.client_id,
            source="game",
            drawing_id=body.drawing_id,
            prompt=body.word,
            recognized=recognized,
        )
    except FeedbackError as exc:
        raise as_http(exc) from None
    shown = [ShownGuess(**g) for g in guesses]
    return GameRoundOut(id=fid, duplicate=duplicate, recognized=recognized, predicted=shown)


def verdict(
    predictor: Predictor, drawing: list[np.ndarray], word: str, win_probability: float
) -> tuple[list[dict[str, Any]], bool]:
    """The model's top 3 guesses for ``drawing`` and whether it recognises ``word`` in it
    (its top guess, at least ``win_probability`` sure: the game's rule)."""
    result = predictor.predict_strokes(drawing, 3)
    guesses = [
        {"label": label, "probability": p}
        for label, p in zip(result.labels, result.probabilities, strict=True)
    ]
    return guesses, result.labels[0] == word and result.probabilities[0] >= win_probability
