"""The model registry: named, numbered bundle versions with aliases, in MLflow.

A registered model (``doodles``) has versions 1, 2, ...; each version is one bundle
folder stored as MLflow artifacts (its ``source``). Aliases say which version plays
which part: ``champion`` is what ``imgclass serve --registry NAME`` serves,
``challenger`` a candidate (set by ``imgclass retrain``). MLflow's deprecated stages
are never used.

Promotion remembers the champion it replaces, so a rollback restores it: the
registered model's tag ``imgclass.champion_history`` keeps the earlier champions (a
JSON list, oldest first) and the alias ``previous-champion`` points at the newest of
them, for people browsing the MLflow UI.

The registry lives in the tracking store (``imgclass.experiments.tracking``):
``--tracking-uri`` > ``$MLFLOW_TRACKING_URI`` > ``work/mlflow/mlflow.db``. A bundle
trained with tracking on is registered from its own training run (its ``bundle/``
artifacts, found through ``RUNDIR/mlflow_run.json``) when that run is in the same
store and holds the same bundle; any other bundle is logged by a small run of the
experiment ``imgclass-registry`` first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from imgclass.errors import ImgclassError, RegistryError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
HISTORY_TAG = "imgclass.champion_history"
HISTORY_LIMIT = 50
REGISTRY_EXPERIMENT = "imgclass-registry"
DEFAULT_CACHE = Path("work") / "registry-cache"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ALIAS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
T = TypeVar("T")


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version: where its bundle is and what it is."""

    name: str
    version: int
    aliases: tuple[str, ...]  # e.g. ("champion",)
    source: str  # artifact URI of the bundle folder
    run_id: str | None
    created: str  # ISO time (UTC)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def test_accuracy(self) -> float | None:
        """The bundle's test accuracy as recorded at registration (None if unknown)."""
        try:
            return float(self.tags["imgclass.test_accuracy"])
        except (KeyError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        out["test_accuracy"] = self.test_accuracy
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVersionInfo:
        """The inverse of ``to_dict`` (KeyError/TypeError/ValueError when malformed)."""
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            aliases=tuple(str(a) for a in data.get("aliases") or ()),
            source=str(data["source"]),
            run_id=data.get("run_id") or None,
            created=str(data.get("created", "")),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            description=str(data.get("description") or ""),
        )


# --- bundles ---------------------------------------------------------------------------


def bundle_digest(path: str | Path) -> str:
    """sha256 over every file of a bundle folder (relative name and content hash, sorted):
    any changed, added or missing file changes it. Hidden files are ignored."""
    root = Path(path)
    lines = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        lines.append(f"{rel}\t{_file_sha256(file)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_bundle(path: Path) -> Any:
    """The loaded bundle (``imgclass.bundle.load_bundle`` checks model.onnx's sha256);
    RegistryError naming the folder when it is not a usable bundle."""
    from imgclass.bundle import load_bundle

    try:
        return load_bundle(path)
    except ImgclassError as exc:
        raise RegistryError(f"not a usable bundle: {exc}") from None


def bundle_tags(bundle: Any, digest: str) -> dict[str, str]:
    """Version tags: model, family, test accuracy, hashes and the dataset."""
    info, metrics = bundle.model_json, bundle.metrics
    dataset = info.get("dataset") or {}
    tags = {
        "imgclass.model": str(info.get("name", "")),
        "imgclass.family": str(info.get("family", "")),
        "imgclass.input_kind": bundle.input_kind,
        "imgclass.num_classes": str(len(bundle.labels)),
        "imgclass.bundle_sha256": digest,
        "imgclass.model_sha256": str(info.get("model_sha256", "")),
        "imgclass.dataset": Path(str(dataset.get("path", ""))).name,
        "imgclass.dataset_manifest_sha256": str(dataset.get("manifest_sha256", "")),
    }
    accuracy = (metrics.get("test") or {}).get("accuracy")
    if isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
        tags["imgclass.test_accuracy"] = f"{float(accuracy):.6g}"
    return {k: v for k, v in tags.items() if v}


def check_name(name: str) -> str:
    """A registered model name: letters, digits, ``.``, ``_``, ``-`` (it names a cache
    folder too)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return name


def check_alias(alias: str) -> str:
    if (
        not isinstance(alias, str)
        or not ALIAS_PATTERN.fullmatch(alias)
        or alias == "latest"
        or re.fullmatch(r"[vV]\d+", alias)
    ):
        raise RegistryError(
            f"invalid alias {alias!r}: a letter, then letters, digits, '_' or '-' "
            "('latest' and v<number> are reserved by MLflow)"
        )
    return alias


def parse_ref(ref: str | int) -> int | str:
    """A version number (int or digits) or an alias name."""
    if isinstance(ref, bool):
        raise RegistryError(f"invalid version or alias {ref!r}")
    if isinstance(ref, int):
        return ref
    text = str(ref).strip()
    if text.isdigit():
        return int(text)
    return check_alias(text.removeprefix("@"))


def _was(previous: int | None, now: int) -> str:
    """What the champion was before: ``was version 2``, ``the first champion``..."""
    if previous is None:
        return "the first champion"
    if previous == now:
        return "it already was"
    return f"was version {previous}"


# --- the registry ----------------------------------------------------------------------


class ModelRegistry:
    """MLflow's model registry in the imgclass store, with champion/challenger aliases.

    uri: the store (resolved by ``mlflow_store.resolve_tracking_uri``). Nothing touches the
    store until a method is called; every MLflow failure becomes a RegistryError.
    """

    def __init__(self, uri: str | None = None) -> None:
        from imgclass.experiments.mlflow_store import resolve_tracking_uri

        self.uri = resolve_tracking_uri(uri)
        self._client: Any = None

    # --- plumbing -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """An MlflowClient bound to this store (tracking and registry alike)."""
        if self._client is None:
            from imgclass.experiments.mlflow_store import import_mlflow, sqlite_path

            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            try:
                import_mlflow()
                from mlflow.tracking import MlflowClient
            except ImportError as exc:  # the slim serving install has no mlflow
                raise RegistryError(
                    f"the model registry needs MLflow, which is not installed ({exc}): "
                    "pip install mlflow-skinny (or mlflow)"
                ) from None

            db = sqlite_path(self.uri)
            with self._store_errors():
                if db is not None:
                    db.resolve().parent.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @contextmanager
    def _store_errors(self, what: str = "") -> Iterator[None]:
        """MLflow and database errors as one-line RegistryErrors naming the store."""
        try:
            yield
        except ImgclassError:
            raise
        except Exception as exc:  # MlflowException, SQLAlchemy, connection errors alike
            raise self._wrap(exc, what) from exc

    def _wrap(self, exc: BaseException, what: str = "") -> RegistryError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        prefix = f"{what}: " if what else ""
        return RegistryError(
            f"{prefix}{first} (model registry at {self.uri}; check --tracking-uri / "
            "MLFLOW_TRACKING_URI)"
        )

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._store_errors():
            return fn(*args, **kwargs)

    @staticmethod
    def _missing(exc: BaseException) -> bool:
        return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")

    def _registered(self, name: str) -> Any:
        """MLflow's RegisteredModel (aliases and tags); RegistryError for unknown names."""
        from mlflow.exceptions import MlflowException

        check_name(name)
        client = self.client
        try:
            return client.get_registered_model(name)
        except MlflowException as exc:
            if self._missing(exc):
                known = self.names()
                hint = f"registered: {', '.join(known)}" if known else "nothing is registered"
                raise RegistryError(
                    f"no model named {name!r} in the registry at {self.uri} ({hint}; "
                    "add one with `imgclass models register BUNDLE --name NAME`)"
                ) from None
            raise self._wrap(exc) from exc

    def _info(self, mv: Any, aliases_of: dict[str, int] | None = None) -> ModelVersionInfo:
        version = int(mv.version)
        if aliases_of is None:
            aliases = tuple(mv.aliases or ())
        else:
            aliases = tuple(sorted(a for a, v in aliases_of.items() if int(v) == version))
        created = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime((mv.creation_timestamp or 0) / 1000)
        )
        return ModelVersionInfo(
            name=mv.name,
            version=version,
            aliases=aliases,
            source=str(mv.source),
            run_id=mv.run_id or None,
            created=created,
            tags=dict(mv.tags or {}),
            description=mv.description or "",
        )

    # --- reading --------------------------------------------------------------------

    def names(self) -> list[str]:
        """The registered model names, sorted."""
        found = self._pages(self.client.search_registered_models)
        return sorted(m.name for m in found)

    def _pages(self, search: Callable[..., Any], *args: Any) -> list[Any]:
        """Every result of a paged MLflow search."""
        out: list[Any] = []
        token = None
        while True:
            page = self._call(search, *args, max_results=1000, page_token=token)
            out.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return out

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, newest first (RegistryError for unknown names)."""
        model = self._registered(name)
        escaped = name.replace("'", "\\'")
        found = self._pages(self.client.search_model_versions, f"name='{escaped}'")
        out = [self._info(mv, dict(model.aliases or {})) for mv in found]
        return sorted(out, key=lambda v: v.version, reverse=True)

    def get(self, name: str, ref: str | int = CHAMPION) -> ModelVersionInfo:
        """The version of ``name`` that ``ref`` (an alias or a version number) names."""
        from mlflow.exceptions import MlflowException

        model = self._registered(name)
        aliases = {str(a): int(v) for a, v in (model.aliases or {}).items()}
        target = parse_ref(ref)
        if isinstance(target, str):
            if target not in aliases:
                raise RegistryError(self._no_alias(name, target, aliases))
            target = aliases[target]
        try:
            mv = self.client.get_model_version(name, str(target))
        except MlflowException as exc:
            if self._missing(exc):
                numbers = sorted(v.version for v in self.versions(name))
                raise RegistryError(
                    f"{name} has no version {target} (versions: "
                    f"{', '.join(map(str, numbers)) or 'none'})"
                ) from None
            raise self._wrap(exc) from exc
        return self._info(mv, aliases)

    @staticmethod
    def _no_alias(name: str, alias: str, aliases: dict[str, int]) -> str:
        have = ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "none"
        hint = (
            f"; promote a version with `imgclass models promote {name} VERSION`"
            if alias == CHAMPION
            else ""
        )
        return f"{name} has no alias {alias!r} (aliases: {have}){hint}"

    # --- registering ----------------------------------------------------------------

    def register(
        self,
        bundle: str | Path,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        alias: str | None = None,
    ) -> ModelVersionInfo:
        """Register a bundle folder as the next version of ``name`` (created if new).

        The bundle is verified first (a broken one is refused). ``alias``: give the new
        version an alias at once (``champion`` promotes it, remembering the champion it
        replaces; ``challenger`` marks a candidate).
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        folder = Path(bundle)
        if (
            folder.is_dir()
            and (folder / "bundle").is_dir()
            and not (folder / "model.json").exists()
        ):
            folder = folder / "bundle"  # a run folder: its bundle
        loaded = verify_bundle(folder)
        digest = bundle_digest(folder)
        all_tags = {  # what describes the bundle wins: fetches verify against it
            **{str(k): str(v) for k, v in (tags or {}).items()},
            **bundle_tags(loaded, digest),
        }
        source, run_id = self._source(folder, name, digest)
        self._ensure_registered(name)
        mv = self._call(
            self.client.create_model_version,
            name,
            source,
            run_id=run_id,
            tags=all_tags,
            description=description,
        )
        version = int(mv.version)
        log.info("registered %s version %d from %s", name, version, source)
        if alias == CHAMPION:
            return self.promote(name, version)
        if alias is not None:
            self.set_alias(name, alias, version)
        return self.get(name, version)

    def _ensure_registered(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:  # another process may have made it first
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise self._wrap(exc) from exc

    def _source(self, folder: Path, name: str, digest: str) -> tuple[str, str]:
        """(artifact URI of the bundle, run id): the training run's own ``bundle/``
        artifacts when they hold this bundle, else a new registration run's."""
        reused = self._training_run_bundle(folder, digest)
        if reused is not None:
            return reused
        return self._log_bundle_run(folder, name, digest)

    def _training_run_bundle(self, folder: Path, digest: str) -> tuple[str, str] | None:
        """The training run recorded in RUNDIR/mlflow_run.json, when it is in this store
        and its ``bundle/`` artifacts are this very bundle (the same digest)."""
        from imgclass.experiments.tracking import read_run_file

        record = read_run_file(folder)
        if record is None:
            return None
        tmp = Path(tempfile.mkdtemp(prefix="imgclass-registry-check-"))
        try:
            import mlflow.artifacts

            run = self.client.get_run(record["run_id"])
            if run.info.lifecycle_stage != "active":
                return None
            got = mlflow.artifacts.download_artifacts(
                run_id=record["run_id"],
                artifact_path="bundle",
                dst_path=str(tmp),
                tracking_uri=self.uri,
            )
            if bundle_digest(got) != digest:
                return None
        except Exception as exc:  # not in this store, or unreadable: log our own copy
            log.debug("training run %s not reused: %s", record.get("run_id"), exc)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("reusing the bundle of training run %s", record["run_id"])
        return f"{run.info.artifact_uri.rstrip('/')}/bundle", str(run.info.run_id)

    def _log_bundle_run(self, folder: Path, name: str, digest: str) -> tuple[str, str]:
        """A small run of ``imgclass-registry`` holding the bundle under ``bundle/``."""
        from imgclass.experiments.mlflow_store import ensure_experiment

        with self._store_errors("cannot record the bundle"):
            experiment_id = ensure_experiment(REGISTRY_EXPERIMENT, self.uri)
            client = self.client
            run = client.create_run(
                experiment_id,
                run_name=f"register-{name}",
                tags={
                    "imgclass.registered_name": name,
                    "imgclass.bundle_sha256": digest,
                    "imgclass.bundle_path": str(folder.resolve()),
                },
            )
            try:
                client.log_artifacts(run.info.run_id, str(folder), "bundle")
            except BaseException:
                client.set_terminated(run.info.run_id, "FAILED")
                raise
            client.set_terminated(run.info.run_id, "FINISHED")
        return f"{run.info.artifact_uri.rstrip('/')}/bundle", str(run.info.run_id)

    # --- aliases --------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``. ``champion`` goes through ``promote`` so that
        rollback keeps working."""
        check_alias(alias)
        if alias == CHAMPION:
            self.promote(name, version)
            return
        self.get(name, version)  # clear errors for unknown names and versions
        self._call(self.client.set_registered_model_alias, name, alias, str(int(version)))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from ``name`` (nothing happens when it is not set)."""
        check_alias(alias)
        if alias in (self._registered(name).aliases or {}):
            self._call(self.client.delete_registered_model_alias, name, alias)

    def promote(self, name: str, version: int) -> ModelVersionInfo:
        """Make ``version`` the champion. The champion it replaces is remembered for
        ``rollback``; a ``challenger`` alias on ``version`` is dropped (it won)."""
        target = self.get(name, int(version))
        aliases = {str(a): int(v) for a, v in (self._registered(name).aliases or {}).items()}
        current = aliases.get(CHAMPION)
        if current is not None and current != target.version:
            history = [*self._history(name), current][-HISTORY_LIMIT:]
            # history first, champion last: a crash in between leaves the old champion
            # serving and a rollback that skips it
            self._call(self.client.set_registered_model_tag, name, HISTORY_TAG, json.dumps(history))
            self._call(self.client.set_registered_model_alias, name, PREVIOUS, str(current))
            self._call(self.client.set_registered_model_alias, name, CHAMPION, str(target.version))
        elif current is None:
            self._call(self.client.set_registered_model_alias, name, CHAMPION, str(target.version))
        if aliases.get(CHALLENGER) == target.version:
            self._call(self.client.delete_registered_model_alias, name, CHALLENGER)
        log.info(
            "%s: champion is now version %d (%s)",
            name,
            target.version,
            _was(current, target.version),
        )
        return self.get(name, target.version)

    def rollback(self, name: str) -> ModelVersionInfo:
        """Make the previous champion the champion again (RegistryError when there is
        none). Rolling back repeatedly walks further back through the promotions."""
        aliases = {str(a): int(v) for a, v in (self._registered(name).aliases or {}).items()}
        current = aliases.get(CHAMPION)
        history = self._history(name)
        if not history and PREVIOUS in aliases:  # set by hand in the MLflow UI
            history = [aliases[PREVIOUS]]
        existing = {v.version for v in self.versions(name)}
        while history and (history[-1] == current or history[-1] not in existing):
            history.pop()
        if not history:
            raise RegistryError(
                f"{name} has no previous champion to roll back to (champion: "
                f"{current if current is not None else 'none'}); promote a version with "
                f"`imgclass models promote {name} VERSION`"
            )
        target = history.pop()
        self._call(self.client.set_registered_model_tag, name, HISTORY_TAG, json.dumps(history))
        self._call(self.client.set_registered_model_alias, name, CHAMPION, str(target))
        if history:
            self._call(self.client.set_registered_model_alias, name, PREVIOUS, str(history[-1]))
        elif PREVIOUS in aliases:
            self._call(self.client.delete_registered_model_alias, name, PREVIOUS)
        before = f"from version {current}" if current is not None else "no champion was set"
        log.info("%s: rolled back to version %d (%s)", name, target, before)
        return self.get(name, target)

    def _history(self, name: str) -> list[int]:
        """Earlier champions, oldest first (from the registered model's tag)."""
        raw = (self._registered(name).tags or {}).get(HISTORY_TAG)
        try:
            loaded = json.loads(raw) if raw else []
        except ValueError:
            log.warning("%s: unreadable %s tag %r ignored", name, HISTORY_TAG, raw)
            return []
        return [int(v) for v in loaded if isinstance(v, int) or str(v).isdigit()]

    # --- fetching -------------------------------------------------------------------

    def fetch_bundle(
        self, name: str, ref: str | int = CHAMPION, cache_dir: Path | None = None
    ) -> Path:
        """A verified local copy of a version's bundle: ``cache_dir/<name>/<version>/``
        (default ``work/registry-cache``). A cached copy is reused when its files still
        match the registered digest; otherwise (tampered, half-deleted) it is fetched
        again. Downloads go to a temporary folder renamed into place, so a reader never
        sees half a bundle and several server workers can fetch at once."""
        info = self.get(name, ref)
        folder = Path(cache_dir or DEFAULT_CACHE) / name / str(info.version)
        expected = info.tags.get("imgclass.bundle_sha256")
        if folder.is_dir():
            if self._cached_ok(folder, expected):
                return folder.resolve()
            log.warning(
                "%s: the cached copy of version %d changed; fetching it again", folder, info.version
            )
            self._discard(folder)
        return self._download(info, folder, expected)

    @staticmethod
    def _cached_ok(folder: Path, expected: str | None) -> bool:
        if expected:
            return bundle_digest(folder) == expected
        try:
            verify_bundle(folder)
        except RegistryError:
            return False
        return True

    @staticmethod
    def _discard(folder: Path) -> None:
        """Move a bad cached copy aside, then delete it (a reader never sees it half gone)."""
        aside = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex}")
        try:
            os.replace(folder, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _download(self, info: ModelVersionInfo, folder: Path, expected: str | None) -> Path:
        import mlflow.artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with self._store_errors(f"cannot fetch {info.name} version {info.version}"):
                got = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=info.source, dst_path=str(tmp), tracking_uri=self.uri
                    )
                )
            self._check_download(info, got, expected)
            try:
                os.replace(got, folder)
            except OSError:  # another worker put it there first: use theirs if sound
                if not (folder.is_dir() and self._cached_ok(folder, expected)):
                    raise RegistryError(f"cannot place the fetched bundle at {folder}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched %s version %d into %s", info.name, info.version, folder)
        return folder.resolve()

    @staticmethod
    def _check_download(info: ModelVersionInfo, got: Path, expected: str | None) -> None:
        where = f"{info.name} version {info.version} ({info.source})"
        if not got.is_dir():
            raise RegistryError(f"{where}: the registered source is not a bundle folder")
        if expected and bundle_digest(got) != expected:
            raise RegistryError(
                f"{where}: the stored bundle does not match the sha256 recorded at "
                "registration (changed or corrupt in the store)"
            )
        try:
            verify_bundle(got)
        except RegistryError as exc:
            raise RegistryError(f"{where}: {exc}") from None
