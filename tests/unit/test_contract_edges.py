"""Rolling deploys in both directions: a payload from a newer client (a field this code does
not know) is read without a crash inside workflows and activities, while the edges (the CLI,
the client API, code that builds a payload) refuse an unknown field with a clear message."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from agentrun.contracts import (
    AgentConfig,
    CancelRequest,
    ModelTurnInput,
    StartRunInput,
    ToolDecision,
    strict_validate,
)

NEWER_START = {
    "run_id": "run-1",
    "session_id": "s-1",
    "prompt": "hello",
    "from_the_future": {"x": 1},
    "config": {
        "max_turns": 3,
        "reasoning_effort": "high",
        "client_tools": [{"name": "pick", "ui_hint": "modal"}],
    },
}


def _from_wire(value: object, type_: type) -> object:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())
    return pydantic_data_converter.payload_converter.from_payload(payload, type_)


def test_workflow_and_activity_payloads_ignore_unknown_fields() -> None:
    inp = _from_wire(NEWER_START, StartRunInput)
    assert isinstance(inp, StartRunInput)
    assert inp.config.max_turns == 3 and inp.config.client_tools[0].name == "pick"
    turn = _from_wire(
        {"run_id": "r", "session_id": "s", "turn": 1, "model": "m", "config": {"new": 1}},
        ModelTurnInput,
    )
    assert isinstance(turn, ModelTurnInput)
    decision = _from_wire(
        {"tool_call_id": "c1", "decision": "approve", "confidence": 0.9}, ToolDecision
    )
    assert isinstance(decision, ToolDecision) and decision.decision == "approve"
    assert StartRunInput.model_validate(NEWER_START).config.max_turns == 3


def test_known_fields_are_still_validated_on_the_wire() -> None:
    with pytest.raises(ValidationError):
        _from_wire({"tool_call_id": "c1", "decision": "maybe"}, ToolDecision)


def test_the_edges_refuse_unknown_fields_with_their_names() -> None:
    with pytest.raises(ValidationError) as info:
        strict_validate(StartRunInput, NEWER_START)
    text = str(info.value)
    assert "from_the_future" in text and "reasoning_effort" in text and "ui_hint" in text
    assert "Extra inputs are not permitted" in text
    with pytest.raises(ValidationError, match="approve_by"):
        strict_validate(ToolDecision, {"tool_call_id": "c", "decision": "approve", "approve_by": 1})
    assert strict_validate(CancelRequest, {"reason": "why"}).reason == "why"


def test_constructors_stay_strict() -> None:
    with pytest.raises(ValidationError, match="max_turn"):
        AgentConfig(max_turn=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="bogus"):
        StartRunInput(run_id="r", session_id="s", prompt="p", config={"bogus": 1})  # type: ignore[arg-type]


def test_the_client_api_refuses_an_unknown_config_field_before_sending() -> None:
    from starter.api import start_run

    class NoClient:
        async def start_workflow(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("nothing may be sent")

    with pytest.raises(ValidationError, match="reasoning_effort"):
        asyncio.run(
            start_run(NoClient(), "tq", "hi", config={"reasoning_effort": "high"})  # type: ignore[arg-type]
        )


def test_the_cli_refuses_an_unknown_config_field_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from starter import cli

    # A Temporal address nobody listens on: refusing before connecting means no "cannot reach".
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    codes: list[int] = []
    monkeypatch.setattr(cli, "exit_process", codes.append)
    cli.main(["run", "hi", "--config", '{"max_turns": 2, "reasoning_effort": "high"}'])
    err = capsys.readouterr().err
    assert codes == [2], err
    assert "config.reasoning_effort" in err and "unknown field" in err
    assert "cannot reach" not in err
