"""The HTTP API's bodies without a server: strict requests (unknown fields anywhere refused),
the idempotency hash (canonical: order, spacing, nulls and defaults do not count), cursors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agentrun.api.events import parse_cursor
from agentrun.api.problems import ApiProblem
from agentrun.api.runs import request_sha256
from agentrun.protocol.http import DecisionRequest, StartRunRequest


def _hash(text: str) -> str:
    return request_sha256(StartRunRequest.model_validate(json.loads(text)))


def test_the_idempotency_hash_is_canonical() -> None:
    one = _hash('{"prompt": "p", "config": {"tools": [], "max_turns": 3}}')
    assert one == _hash('{"config":{"max_turns":3,"tools":[]},"prompt":"p"}')
    assert one != _hash('{"prompt": "p", "config": {"tools": [], "max_turns": 4}}')
    assert _hash('{"prompt": "p"}') == _hash('{"prompt": "p", "config": null}')
    assert _hash('{"prompt": "p"}') != _hash('{"prompt": "q"}')
    assert _hash('{"prompt": "p"}') != _hash('{"prompt": "p", "session_id": "s"}')


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"prompt": "p", "extra": 1}, "extra"),
        ({"prompt": "p", "config": {"max_turn": 3}}, "max_turn"),
        ({"prompt": "p", "config": {"client_tools": [{"name": "t", "x": 1}]}}, "x"),
        ({"prompt": " "}, "empty"),
        ({"prompt": "p", "session_id": "a/../b c"}, "session_id"),
    ],
)
def test_requests_refuse_unknown_fields_anywhere(body: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        StartRunRequest.model_validate(body)
    assert where in str(info.value)


def test_who_decided_is_never_taken_from_the_body() -> None:
    with pytest.raises(ValidationError, match="decided_by"):
        DecisionRequest.model_validate({"decision": "approve", "decided_by": "boss"})


@pytest.mark.parametrize("bad", ["", "x", "-1", "1.0", "１", str(2**63)])
def test_a_malformed_cursor_is_400(bad: str) -> None:
    with pytest.raises(ApiProblem) as info:
        parse_cursor(bad, "Last-Event-ID")
    assert info.value.status == 400 and "Last-Event-ID" in info.value.detail


def test_a_cursor() -> None:
    assert parse_cursor("0", "after") == 0 and parse_cursor(" 42 ", "after") == 42
