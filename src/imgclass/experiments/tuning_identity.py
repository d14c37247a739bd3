"""What a tuning study belongs to, so that a resumed study goes on with the same search.

A study's trial values are comparable only when every trial trained the same model
family on the same data, drew its suggestions from the same search space and shared
the same fixed settings. ``imgclass tune`` records those facts in the study's user
attributes when it creates a study and refuses to resume one whose facts differ: the
default study name (``<model>-<dataset folder>``) is the same for two datasets kept in
folders of the same name, and resuming the wrong study would report the other data's
best trial, ``best.yaml`` and bundle as the answer.

The dataset is identified by its manifest's sha256 (the path may move), the space by
the distributions a trial of it suggests, the fixed settings by the resolved training
configuration minus the searched keys and the settings that only say how to run
(threads, device...), which may change between machines without changing a score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclass.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from imgclass.experiments.tuning import Plan

# Bump when the attributes below change meaning; a study written by a newer imgclass
# (a higher number) is refused rather than misread.
STUDY_FORMAT = 1
FORMAT_KEY = "imgclass_study_format"
# Settings that say how a trial runs, not what it learns: they may differ between runs.
RUNTIME_KEYS = frozenset({"num_threads", "workers", "device", "in_memory_mb"})
SHOWN = 3  # differences named in a message


def study_identity(plan: Plan) -> dict[str, Any]:
    """The user attributes that tie a study to its model, data, space and settings."""
    from imgclass.data.store import manifest_hash
    from imgclass.train.config import split_sets

    data = Path(plan.settings.data)
    space, suggested = space_distributions(plan)
    searched = suggested - {k for k, _ in split_sets(plan.settings.sets)}  # --set wins
    return {
        FORMAT_KEY: STUDY_FORMAT,
        "model": plan.model,
        "family": plan.info.family,
        "data": str(data.resolve()),
        "dataset_manifest_sha256": manifest_hash(data),
        "search_space": space,
        "searched": sorted(searched),
        "fixed_settings": fixed_settings(plan, searched),
    }


def space_distributions(plan: Plan) -> tuple[dict[str, Any], set[str]]:
    """The search space as ``{param: distribution as JSON}`` and the settings it sets
    (``--set`` keys), from one trial of a throwaway in-memory study. The registered
    spaces suggest the same parameters in every trial (none is conditional)."""
    import optuna

    space = plan.info.search_space
    if space is None:  # make_plan refuses such models
        raise ConfigError(f"{plan.model} declares no search space")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    searched = set(space(trial))
    distributions = {
        name: json.loads(optuna.distributions.distribution_to_json(d))
        for name, d in sorted(trial.distributions.items())
    }
    return distributions, searched


def fixed_settings(plan: Plan, searched: set[str]) -> dict[str, Any]:
    """Every setting a trial shares with the others, as ``--set`` keys (``lr``,
    ``model.dropout``, ``augment.rotation``), JSON-normalised."""
    from imgclass.experiments.tuning import trial_config

    flat: dict[str, Any] = {}
    for key, value in trial_config(plan, {}).to_dict().items():
        if key in ("augment", "model_args") and isinstance(value, dict):
            prefix = "augment" if key == "augment" else "model"
            flat.update({f"{prefix}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    kept = {k: v for k, v in flat.items() if k not in searched and k not in RUNTIME_KEYS}
    return dict(json.loads(json.dumps(kept, sort_keys=True, default=str)))


def check_identity(study: optuna.Study, plan: Plan) -> None:
    """Record the identity of a new study; refuse to resume a study whose model, data,
    search space or fixed settings differ from this run's (ConfigError saying how to
    start a new study instead)."""
    attrs = study.user_attrs
    if not study.trials and attrs.get("model", plan.model) == plan.model:
        for key, value in study_identity(plan).items():  # nothing yet to contradict
            study.set_user_attr(key, value)
        return
    problem = identity_problem(attrs, plan)
    if problem:
        raise ConfigError(
            f"study {plan.study!r} in {plan.storage} {problem}; {new_study_hint(plan)}"
        )


def identity_problem(attrs: dict[str, Any], plan: Plan) -> str | None:
    """Why the recorded study is not this run's search, or None when it is."""
    if "model" not in attrs:
        return "is not an imgclass study"
    if attrs["model"] != plan.model:
        model = attrs["model"]
        return f"searches {model}, not {plan.model} (pass --model {model} to resume it)"
    made = attrs.get(FORMAT_KEY)
    if not isinstance(made, int):
        return (
            "was made by an older imgclass that did not record which data, search space "
            "and settings it used, so it cannot be resumed safely"
        )
    if made > STUDY_FORMAT:
        return (
            f"was made by a newer imgclass (study format {made}; this one reads up to "
            f"{STUDY_FORMAT}): upgrade imgclass to resume it"
        )
    mine = study_identity(plan)
    if attrs.get("dataset_manifest_sha256") != mine["dataset_manifest_sha256"]:
        return (
            f"searches another dataset: {attrs.get('data')} (manifest sha256 "
            f"{str(attrs.get('dataset_manifest_sha256'))[:12]}), not {mine['data']} (manifest "
            f"sha256 {mine['dataset_manifest_sha256'][:12]}); pass --data {attrs.get('data')} "
            "to resume it"
        )
    changed = differences(attrs.get("search_space") or {}, mine["search_space"])
    if changed:
        return f"searched another space ({changed})"
    changed = searched_differences(attrs.get("searched") or [], mine["searched"])
    if changed:
        return f"searched other settings ({changed}); drop or give the same --set to resume it"
    changed = differences(attrs.get("fixed_settings") or {}, mine["fixed_settings"], common=True)
    if changed:
        return (
            f"was run with other fixed settings ({changed}); give the same "
            "--set/--config/--epochs/--seed to resume it"
        )
    return None


def differences(recorded: dict[str, Any], now: dict[str, Any], common: bool = False) -> str:
    """``"lr: 0.001 in the study, 0.01 now; ..."`` for the first few keys that differ.

    common: compare only the keys both have (a setting that one imgclass version has and
    the other has not is not a change the user made)."""
    keys = sorted(recorded.keys() & now.keys() if common else recorded.keys() | now.keys())
    lines = [
        f"{k}: {describe(recorded.get(k))} in the study, {describe(now.get(k))} now"
        for k in keys
        if recorded.get(k) != now.get(k)
    ]
    more = f"; and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
    return "; ".join(lines[:SHOWN]) + more


def searched_differences(recorded: list[str], now: list[str]) -> str:
    """``"batch_size: searched in the study, fixed by --set now"``, or ``""``."""
    lines = [f"{k}: searched in the study, fixed by --set now" for k in recorded if k not in now]
    lines += [f"{k}: fixed by --set in the study, searched now" for k in now if k not in recorded]
    return "; ".join(lines)


def describe(value: Any) -> str:
    """A setting, or a distribution as JSON (``{"name": ..., "attributes": ...}``)."""
    if value is None:
        return "absent"
    if isinstance(value, dict) and "attributes" in value:
        attrs = value["attributes"]
        if "choices" in attrs:
            return f"one of {attrs['choices']}"
        log = " log" if attrs.get("log") else ""
        return f"{attrs.get('low')}..{attrs.get('high')}{log}"
    return json.dumps(value)


def new_study_hint(plan: Plan) -> str:
    """How to start a new study instead of resuming this one."""
    s = plan.settings
    if s.storage:
        return "to start a new study, choose a new --study name (and a new --out for its files)"
    how = (
        "a new --out folder" if s.out else "a new --study name (its files go to work/tune/<study>)"
    )
    return f"to start a new study, choose {how}, or remove {plan.out} to start this one afresh"
