"""What compaction summarises (activities.compaction._plan), without a server: never a tool
call without its results, never the current run's messages, nothing while the context fits,
and what is kept verbatim starts with a user message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from activities.compaction import _plan, _transcript
from activities.context import _units
from agentrun.contracts import AgentConfig
from agentrun.db.models import Message

WORDS = "word " * 60  # ~75 tokens


def _msg(i: int, run: str, role: str, **kw: Any) -> Message:
    return Message(id=i, run_id=run, role=role, content=kw.pop("content", WORDS), **kw)


def _session() -> list[Message]:
    call = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}
    out, i = [], 0
    for r in range(1, 6):
        run = f"r{r}"
        i += 1
        out.append(_msg(i, run, "user"))
        if r == 2:
            i += 1
            out.append(_msg(i, run, "assistant", tool_calls=[call], content=""))
            i += 1
            out.append(_msg(i, run, "tool", tool_call_id="c1"))
        i += 1
        out.append(_msg(i, run, "assistant"))
    return out


@pytest.mark.parametrize("budget", [300, 400, 500, 700])
@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_the_cut_is_at_a_unit_that_starts_with_a_prompt(budget: int, share: float) -> None:
    messages = _session()
    config = AgentConfig(
        context_strategy="summarize", context_token_budget=budget, summary_keep_share=share
    )
    plan = _plan(config, None, messages, "r5")
    assert plan is not None
    covered, covers_to_id = plan
    assert covered == [m for m in messages if m.id <= covers_to_id]
    assert all(m.run_id != "r5" for m in covered)  # the current run is never summarised
    rest = [m for m in messages if m.id > covers_to_id]
    assert rest[0].role == "user"  # no assistant turn or tool result cut from its prompt
    # Whole units only: a call and its result are on the same side of the cut.
    ids = {m.id for m in covered}
    assert not ({4, 5} & ids) or {4, 5} <= ids  # the call (4) and its result (5)


def test_nothing_is_summarised_while_the_context_fits() -> None:
    config = AgentConfig(context_strategy="summarize", context_token_budget=100_000)
    assert _plan(config, None, _session(), "r5") is None


def test_the_transcript_shows_calls_results_and_the_previous_summary() -> None:
    messages = _session()[:5]
    previous = Message(id=99, run_id="r0", role="system", kind="summary", content="EARLIER")
    text = _transcript(previous, messages)
    assert "EARLIER" in text and "calc({})" in text and "Tool result (c1)" in text
    assert len(_units(messages)) == 4  # u1, a1, u2, the call with its result
    assert json.dumps(text)  # plain text the summariser can take
