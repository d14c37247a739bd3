"""The OpenAPI document describes what the API answers: every ``/v1`` JSON route names
its response model, ``/v1/predict`` shows a strokes and an image example, and what the
routes really answer (the hand-serialised hot path included) fits those models."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from imgclass.serve import schemas
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings

ADMIN = {"Authorization": "Bearer t"}


@pytest.fixture(scope="module")
def client(digits_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("openapi") / "fb.sqlite3"
    settings = ServeSettings(models=[str(digits_bundle)], feedback_db=db, admin_token="t")
    with TestClient(create_app(settings)) as c:
        yield c


def strict(model: type[BaseModel], answer: object) -> BaseModel:
    """``answer`` validated by ``model`` with no key left undocumented (extra keys fail)."""

    class Strict(model):  # type: ignore[valid-type,misc]
        model_config = ConfigDict(extra="forbid")

    return Strict.model_validate(answer)


def test_every_v1_json_route_names_its_response_model(client):
    spec = client.get("/openapi.json").json()
    unnamed = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            schema = ok.get("content", {}).get("application/json", {}).get("schema")
            if not path.startswith("/v1") or schema is None:  # ndjson, PNG: not JSON
                continue
            named = schema.get("items", schema).get("$ref", "").startswith("#/components/")
            if not named:
                unnamed.append(f"{method.upper()} {path}: {schema}")
    assert not unnamed, unnamed
    assert len(spec["paths"]) >= 20


def test_predict_documents_strokes_and_image_examples_that_work(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"strokes", "image"}
    refusals = spec["paths"]["/v1/predict/batch"]["post"]["responses"]
    assert refusals["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
    r = client.post("/v1/predict", json={"strokes": "a line"})
    assert r.status_code == 422 and strict(schemas.Problem, r.json())
    for example in body["examples"].values():
        r = client.post("/v1/predict?include_input=true", json=example["value"])
        assert r.status_code == 200, r.text
        strict(schemas.PredictResponse, r.json())
    batch = {"items": [e["value"] for e in body["examples"].values()]}
    r = client.post("/v1/predict/batch", json=batch)
    assert r.status_code == 200, r.text
    assert len(strict(schemas.BatchResponse, r.json()).results) == 2  # type: ignore[attr-defined]


def test_model_routes_answer_what_they_document(client):
    listed = strict(schemas.ModelList, client.get("/v1/models").json())
    name = listed.models[0].name  # type: ignore[attr-defined]
    strict(schemas.ModelInfo, client.get(f"/v1/models/{name}").json())
    report = strict(schemas.ModelReport, client.get(f"/v1/models/{name}/report").json())
    strict(schemas.Example, client.get(f"/v1/models/{name}/examples/random?seed=1").json())
    label = next(iter(report.per_class))  # type: ignore[attr-defined]
    cell = client.get(f"/v1/models/{name}/confusion", params={"true": label, "predicted": label})
    assert strict(schemas.ConfusionCell, cell.json()).examples  # type: ignore[attr-defined]


def test_feedback_admin_routes_answer_what_they_document(client):
    r = client.post("/v1/feedback", json={"input": {"strokes": [[[1, 5], [1, 5]]]}, "label": "7"})
    fid = strict(schemas.FeedbackOut, r.json()).id  # type: ignore[attr-defined]
    accepted = client.post(f"/v1/feedback/{fid}/accept", headers=ADMIN).json()
    assert strict(schemas.StatusSet, accepted).status == "accepted"  # type: ignore[attr-defined]
    rejected = client.post(f"/v1/feedback/{fid}/reject", headers=ADMIN).json()
    assert strict(schemas.StatusSet, rejected).status == "rejected"  # type: ignore[attr-defined]
    stats = strict(schemas.FeedbackStats, client.get("/v1/feedback/stats", headers=ADMIN).json())
    assert stats.label["7"]["rejected"] == 1  # type: ignore[attr-defined]
    # no registry here: reload is refused with the same one-line detail as before
    r = client.post("/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 409 and "registry" in r.json()["detail"]
