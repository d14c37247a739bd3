"""Property-based fuzzing of our own OpenAPI schema: no input may cause a server error."""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from imgclass.serve.app import create_app  # noqa: E402
from imgclass.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def app(digits_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "fb.sqlite3"
    return create_app(ServeSettings(models=[str(digits_bundle)], feedback_db=db, admin_token="t"))


@pytest.mark.parametrize("who", ["anyone", "admin"])
def test_no_server_errors(app, who):
    """Everyone, and an admin with the token (so the admin endpoints are fuzzed past
    their 401: listing, review, export, delete, retrain and reload)."""
    headers = {"Authorization": "Bearer t"} if who == "admin" else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/predict" for op in operations)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_5xx(case):
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )

        no_5xx()
