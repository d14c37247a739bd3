"""The served model's ONNX file, for the page to run it in the browser."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from imgclass.serve.routes.deps import StateDep

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models/{name}/model.onnx",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        304: {"description": "unchanged"},
    },
)
def model_file(name: str, state: StateDep, request: Request) -> Response:
    """The model's ONNX file, as the bundle holds it (verified against its sha256 when
    loaded). Its ETag is that sha256: browsers keep it and revalidate (304) on each load."""
    predictor = state.predictor(name)
    etag = f'"{predictor.bundle.model_json.get("model_sha256", "")}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(predictor.model_bytes(), media_type="application/octet-stream", headers=headers)
