"""Contract validation that needs no server: text the database cannot store (a NUL, a lone
surrogate) and a model name it cannot hold are refused with a clear error where they enter."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agentrun.contracts import (
    AgentConfig,
    CancelRequest,
    ClientTool,
    StartRunInput,
    ToolDecision,
    ToolResultSubmission,
    storage_problems,
)

NUL = "a\x00b"
SURROGATE = "a\ud800b"


def start(prompt: str = "hello", **config: object) -> StartRunInput:
    return StartRunInput(
        run_id="run-1", session_id="s-1", prompt=prompt, config=AgentConfig(**config)
    )


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_prompt_that_the_database_cannot_store_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        start(prompt=bad)
    text = str(info.value)
    assert "prompt" in text
    assert ("NUL" in text) if bad == NUL else ("surrogate" in text)


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: AgentConfig(system_prompt=NUL), "system_prompt"),
        (lambda: AgentConfig(system_prompt=SURROGATE), "system_prompt"),
        (lambda: ClientTool(name="t", description=NUL), "description"),
        (lambda: ToolDecision(tool_call_id="c", decision="reject", reason=NUL), "reason"),
        (lambda: ToolDecision(tool_call_id="c", decision="approve", decided_by=NUL), "decided_by"),
        (lambda: ToolResultSubmission(tool_call_id="c", result=NUL), "result"),
        (lambda: ToolResultSubmission(tool_call_id="c", result={"k": [SURROGATE]}), "result"),
        (lambda: CancelRequest(reason=NUL), "reason"),
        (lambda: AgentConfig(workspace=NUL), "workspace"),
    ],
)
def test_text_fields_refuse_nul_and_lone_surrogates(build, where: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        build()
    assert where in str(info.value)


@pytest.mark.parametrize(
    "model", ["m" * 201, "gpt-4\n", "gpt\x00-4", "gpt\u200b4"], ids=["long", "nl", "nul", "zwsp"]
)
def test_model_name_must_fit_and_be_printable(model: str) -> None:
    with pytest.raises(ValidationError) as info:
        AgentConfig(model=model)
    assert "model" in str(info.value)


def test_ordinary_text_still_passes() -> None:
    inp = start(
        prompt="Grüße 👋\n\ttabs and newlines are fine",
        model="org/model-name:v1.2",
        system_prompt="Be brief. ✓",
        client_tools=[ClientTool(name="pick", description="Pick one ✓")],
    )
    assert inp.config.model == "org/model-name:v1.2"
    assert AgentConfig(model="m" * 200).model == "m" * 200
    ToolDecision(tool_call_id="c", decision="reject", reason="no 🙅", decided_by="ana")
    ToolResultSubmission(tool_call_id="c", result={"rows": ["ok", 1, None]})


def test_first_token_timeout_is_bounded_by_the_model_timeout() -> None:
    assert AgentConfig(model_first_token_timeout_s=120).model_first_token_timeout_s == 120
    with pytest.raises(ValidationError) as info:
        AgentConfig(model_timeout_s=60, model_first_token_timeout_s=120)
    assert "model_first_token_timeout_s" in str(info.value)


def test_a_workflow_payload_decodes_so_the_run_can_refuse_it_itself() -> None:
    # Inside the worker (JSON from a Temporal payload) the input must decode: a run whose input
    # does not decode fails its workflow task again and again instead of ending. The worker
    # then refuses it with storage_problems. (A lone surrogate cannot travel as JSON at all.)
    raw = json.dumps(
        {
            "run_id": "run-1",
            "session_id": "s-1",
            "prompt": NUL,
            "config": {"model": "m" * 300, "system_prompt": NUL},
        }
    )
    inp = StartRunInput.model_validate_json(raw)
    problems = storage_problems(inp)
    assert any("prompt" in p and "NUL" in p for p in problems), problems
    assert any("model" in p and "200" in p for p in problems), problems
    assert any("system_prompt" in p for p in problems), problems
    assert storage_problems(start()) == []


def test_decision_payloads_are_refused_even_from_json() -> None:
    # An update whose payload does not decode is rejected to its sender: the run is untouched.
    raw = json.dumps({"tool_call_id": "c", "decision": "reject", "reason": NUL})
    with pytest.raises(ValidationError):
        ToolDecision.model_validate_json(raw)
