"""A property-based run of the API against its own OpenAPI document (schemathesis): for
every route, generated parameters, headers and ids, answered by a real daemon over HTTP.
No answer is a 5xx, and every answer matches the status codes, content types and schemas
the document declares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.acceptance.webtools import Web, start_http
from tests.conftest import Env


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    env = Env(tmp_path_factory.mktemp("schema"))
    try:
        d, web = start_http(env)
        env.publish("echo fine", "ok.trigger")
        env.publish("echo broken >&2; exit 3", "bad.trigger")
        env.publish('{"comand": "typo"}', "typo.trigger")
        d.wait_for("succeeded")
        d.wait_for("failed")
        d.wait_for("rejected")
        yield web
        web.close()
    finally:
        env.close()


def test_the_api_keeps_to_its_openapi_document(live: Web) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    schema = schemathesis.openapi.from_url(f"{live.url}/api/openapi.json", headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    # Generated ids almost never name a job: half the cases get one that does.
    real = {"job_id": [j["id"] for j in live.json("/api/jobs")], "lane": ["default"]}
    for operation in operations:
        strategy = operation.as_strategy()
        for name, values in real.items():
            if "{" + name + "}" in operation.path:
                strategy = st.tuples(strategy, st.sampled_from([None, *values])).map(
                    lambda pair, name=name: _with(pair[0], name, pair[1])
                )

        @given(case=strategy)
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: Any) -> None:
            if case.query and case.query.get("follow") not in (None, False, "false"):
                case.query["follow"] = False  # jobs here have ended; a follow ends at once too
            # Every check but "a schema-valid request is accepted": the API rightly refuses
            # some (a range past the end of a log is a 416, an unknown job a 404).
            case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

        check()


def _with(case: Any, name: str, value: str | None) -> Any:
    if value is not None:
        case.path_parameters[name] = value
    return case


def test_the_document_needs_the_token(live: Web) -> None:
    assert live.anon.get("/api/openapi.json").status_code == 401
    spec = live.json("/api/openapi.json")
    assert spec["info"]["title"] == "spoolq" and Path("/api/jobs").as_posix() in spec["paths"]
