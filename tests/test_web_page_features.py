"""The web page's views of issues 14-16 in a real browser (headless Chromium, Selenium) against
a real uvicorn server, the session's Temporal dev server and PostgreSQL, a worker in this
process and the offline model: a sub-run in its parent's chat with its approval decided from
there, the busy-session choices (queue and cancel a waiting message, interrupt, roll back, the
marks from the record), cost and budget notices, a compaction notice, and deleting chats (a
busy one with "cancel and delete"). Screenshots: tests/web_support.SHOTS."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
from temporalio.worker import Worker

from agentrun.contracts.subagents import child_run_id
from agentrun.protocol.statuses import RunStatus
from agentrun.store import Repository
from agentrun.testing.offline_model import OfflineModelServer, Reply, ToolCallSpec
from tests.conftest import bash_call
from tests.http_support import Keys, bearer, start
from tests.test_cost_ledger import PRICED_MODEL, reported, their_price
from tests.test_web_page import card, page, send, shown, status_is
from tests.web_support import Page

pytest_plugins = ["tests.http_fixtures", "tests.web_support"]
__all__ = ["page"]  # the fixture, shared with tests/test_web_page.py

SLOW = Reply(text="slow " * 1000, chunk_chars=5, delay_s=0.05)  # 10 s of streaming, or more


TEXTS = "return [...document.querySelectorAll(arguments[0])].map((n) => n.textContent)"


def qs(css: str) -> str:
    """A CSS selector as a JavaScript string literal."""
    return json.dumps(css)


def run_node(run_id: str) -> str:
    return f'.run[data-run-id="{run_id}"]'


async def run_status(page: Page, run_id: str, status: str) -> None:
    await page.wait(
        "const s = document.querySelector(arguments[0]);"
        " return s && s.textContent === arguments[1]",
        f"{run_node(run_id)} > .run-meta .status",
        status,
        what=f"run {run_id} {status}",
    )


async def test_a_sub_run_shows_in_its_parents_chat_and_is_decided_there(
    page: Page, keys: Keys, worker: Worker, repo: Repository, model_server: OfflineModelServer,
    run_id: str,
) -> None:  # fmt: skip
    prompt, task = f"web parent {run_id}", f"web child task {run_id}"
    delegate = ToolCallSpec("delegate_to_researcher", {"task": task}, id="c_parent")
    model_server.script(prompt, [Reply(tool_calls=[delegate]), Reply(text="Parent done.")])
    calc = ToolCallSpec("calculator", {"expression": "6*7"}, id="c_child")
    model_server.script(task, [Reply(tool_calls=[calc]), Reply(text="42")])
    config = {
        "tools": [],
        "subagents": {"researcher": {"tools": ["calculator"], "approval": "require_all"}},
    }
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config=config)
    parent = started["run_id"]
    child = child_run_id(parent, "researcher", "c_parent")
    await page.open(f"/#/s/{started['session_id']}", key=keys.full)
    sub = f'.subrun[data-subrun-id="{child}"]'
    # The child's call waits: shown inside the delegate call's card, with the child's link.
    child_ask = qs(f"{sub} {card('c_child')} .ask")
    await page.wait(f"return document.querySelector({child_ask})",
                    what="the child's approval in the parent's chat")  # fmt: skip
    inside = qs(f"{card('c_parent')} {sub}")
    assert await page.js(f"return document.querySelector({inside}) !== null"), (
        "the sub-run box belongs to the delegate call's card"
    )
    assert "sub-agent researcher" in await page.text(sub)
    assert await page.text(f"{sub} .substatus") == RunStatus.WAITING_APPROVAL
    href = await page.js(
        f"return document.querySelector({qs(sub + ' a.subrun-link')}).getAttribute('href')"
    )
    assert href == f"#/s/{child}"
    await page.shot("sub-run-waiting")
    await page.resize(375, 800)  # readable on a phone: nothing wider than the screen
    assert await page.js("return document.documentElement.scrollWidth <= window.innerWidth")
    await page.shot("sub-run-narrow")
    await page.resize(1400, 900)
    await page.click(f"{sub} {card('c_child')} button.approve")
    decided = await shown(page, f"{sub} {card('c_child')} .decided", "the child's decision")
    assert "approved by app" in decided
    substatus = qs(sub + " .substatus")
    await page.wait(f"return document.querySelector({substatus}).textContent === 'DONE'",
                    what="the sub-run done")  # fmt: skip
    await run_status(page, parent, RunStatus.DONE)
    # Decided on the child, through the child's decision endpoint.
    call = await repo.get_tool_call(child, "c_child")
    assert call is not None and call.decision == "approve" and call.decided_by == "app"
    await page.shot("sub-run-done")
    # The link opens the child's own chat: its task and its answer.
    await page.click(f"{sub} a.subrun-link")
    await page.wait(
        "return location.hash === arguments[0] && [...document.querySelectorAll('.msg.assistant')]"
        ".some((n) => n.textContent === '42')",
        f"#/s/{child}",
        what="the child's chat",
    )
    assert task in await page.text(".msg.user")
    # The parent's chat from the record (a reload after it ended): the sub-run is still there.
    await page.open(f"/#/s/{started['session_id']}", key=keys.full)
    await page.wait(f"return document.querySelector({substatus})?.textContent === 'DONE'",
                    what="the sub-run from the record")  # fmt: skip
    assert await page.js(f"return document.querySelector({inside}) !== null")
    assert await page.text(f"{sub} a.subrun-link") == child


async def test_busy_session_queue_cancel_interrupt_and_roll_back(
    page: Page, keys: Keys, worker: Worker, repo: Repository, model_server: OfflineModelServer,
    run_id: str,
) -> None:  # fmt: skip
    tag = f"web busy {run_id}"
    for name in ("a", "c", "e"):
        model_server.script(f"{tag} {name}", [SLOW])
    for name in ("b", "b2", "d", "f"):
        model_server.script(f"{tag} {name}", [Reply(text=f"answer {name}")])
    await page.open("/#/new", key=keys.full)
    await send(page, f"{tag} a")
    await page.wait("return !document.querySelector('#busy').hidden", what="run a going")
    # Queue two messages behind run a, then cancel the second one.
    await page.js("document.querySelector('#if-busy').value = 'enqueue'")
    await send(page, f"{tag} b")
    await send(page, f"{tag} b2")
    await page.wait("return document.querySelectorAll('#queue li').length === 2", what="2 queued")
    await page.shot("queued")
    await page.resize(375, 800)
    assert await page.js("return document.documentElement.scrollWidth <= window.innerWidth")
    await page.shot("queued-narrow")
    await page.resize(1400, 900)
    texts = await page.js(
        "return [...document.querySelectorAll('#queue li .text')].map(n => n.textContent)"
    )
    assert texts == [f"{tag} b", f"{tag} b2"]
    await page.js("document.querySelectorAll('#queue li button.queue-cancel')[1].click()")
    await page.wait("return document.querySelectorAll('#queue li').length === 1", what="1 queued")
    session = str(await page.js("return decodeURIComponent(location.hash.slice(4))"))
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        q = (
            await http.get(f"/v1/sessions/{session}/queue?all=true", headers=bearer(keys.full))
        ).json()
    states = {m["state"] for m in q["messages"]}
    assert "cancelled" in states, q
    # Run a is cancelled (it would run for long), then b's run starts and is followed; b2
    # never runs.
    await page.click("#busy-cancel")
    await page.wait(
        "return [...document.querySelectorAll('.run .msg.assistant .text')]"
        ".some((n) => n.textContent === arguments[0])",
        "answer b",
        timeout=60,
        what="the queued message's answer",
    )
    await page.wait("return document.querySelector('#queue-box').hidden", what="queue empty")
    assert model_server.requests_for(f"{tag} b2") == []

    # Interrupt: c streams, d interrupts it; c's partial answer is marked interrupted.
    await page.js("document.querySelector('#if-busy').value = ''")
    await page.wait("return document.querySelector('#busy').hidden", what="idle after b")
    await send(page, f"{tag} c")
    await page.wait(  # c's own answer, not a's (which starts the same way)
        "const runs = document.querySelectorAll('.run');"
        " const t = runs[runs.length - 1].querySelector('.msg.assistant .text');"
        " return t && t.textContent.startsWith('slow')",
        what="c streaming",
    )
    await page.js("document.querySelector('#if-busy').value = 'interrupt'")
    await send(page, f"{tag} d")
    await page.wait(
        "return document.querySelector('.msg.assistant.interrupted')", what="interrupted"
    )
    await page.wait(
        "return [...document.querySelectorAll('.run .msg.assistant .text')]"
        ".some((n) => n.textContent === 'answer d')",
        what="d's answer",
    )
    # Roll back: e streams, f rolls it back; e's prompt and run are marked rolled back.
    await page.wait("return document.querySelector('#busy').hidden", what="idle after d")
    await page.js("document.querySelector('#if-busy').value = ''")
    await send(page, f"{tag} e")
    await page.wait("return !document.querySelector('#busy').hidden", what="e going")
    # The chat's default (no if_busy sent; this chat has none): refused, nothing queued.
    await send(page, f"{tag} refused")
    refused = await shown(page, "#send-error", "the refusal of a busy chat")
    assert "active run" in refused, refused
    assert (
        await page.js("return document.querySelector('#message-input').value") == f"{tag} refused"
    )
    assert await page.js("return document.querySelector('#queue-box').offsetParent === null")
    await page.js("document.querySelector('#if-busy').value = 'rollback'")
    await send(page, f"{tag} f")
    await page.wait(
        "return [...document.querySelectorAll('.run .msg.assistant .text')]"
        ".some((n) => n.textContent === 'answer f')",
        what="f's answer",
    )
    await page.shot("interrupted-and-rolled-back")
    # From the record after a reload: the states the transcript carries.
    await page.js("window.beforeReload = true; location.reload()")
    await page.wait(
        "return !window.beforeReload && document.querySelector('.msg.user.rolled_back')",
        what="the reloaded transcript",
    )
    rolled = await page.js(TEXTS, ".msg.user.rolled_back .text")
    assert rolled == [f"{tag} e"]
    # Nothing runs now: the busy line is not shown (hidden really hides it).
    assert await page.js("return document.querySelector('#busy').offsetParent === null")
    interrupted = await page.js(TEXTS, ".msg.assistant.interrupted .text")
    assert len(interrupted) == 1 and interrupted[0].startswith("slow"), interrupted
    assert await page.js("return document.querySelectorAll('.msg.user.interrupted').length") == 0
    await page.shot("marks-from-record")


async def test_cost_on_the_usage_line_and_a_budget_notice(
    page: Page, keys: Keys, worker: Worker, repo: Repository, model_server: OfflineModelServer,
    run_id: str,
) -> None:  # fmt: skip
    usage = reported(3000, 200, cached=2048, reasoning=50)
    prompt = f"web priced {run_id}"
    model_server.script(prompt, [Reply(text="Priced.", usage=usage)])
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config={"model": PRICED_MODEL, "tools": []})
        session = started["session_id"]
        await page.open(f"/#/s/{session}", key=keys.full)
        await run_status(page, started["run_id"], RunStatus.DONE)
        view = (await http.get(f"/v1/runs/{started['run_id']}", headers=bearer(keys.full))).json()
    cost = view["usage"]["cost_usd"]
    assert Decimal(cost) == their_price(PRICED_MODEL, usage)
    await page.open(f"/#/s/{session}", key=keys.full)  # from the record, whatever was live
    assert await shown(page, f"{run_node(started['run_id'])} .cost", "the cost") == f"${cost}"
    # Exact decimal sums in the page (the live usage line adds each call's cost string).
    total = await page.js("return addDecimal(arguments[0], '0.00000007')", cost)
    assert Decimal(total) == Decimal(cost) + Decimal("0.00000007")

    # A run of the page on the unpriced offline model: tokens counted, cost unknown.
    second = f"web unpriced {run_id}"
    model_server.script(second, [Reply(text="Free?")])
    await send(page, second)
    await status_is(page, RunStatus.DONE)
    await page.wait(
        "const n = document.querySelectorAll('.run .cost'); "
        "return n[n.length - 1].textContent === 'cost unknown for 1 call'",
        what="the unpriced call",
    )

    # A session token budget already spent: the next run stops before any model call.
    await repo.set_session_budget(session, None, 10, tenant=keys.tenant)
    third = f"web over budget {run_id}"
    model_server.script(third, [Reply(text="Never.")])
    await send(page, third)
    await status_is(page, RunStatus.FAILED)
    notice = await shown(page, ".run:last-of-type .notice.budget", "the budget notice")
    assert "chat's token budget of 10 tokens" in notice and "run stopped" in notice, notice
    assert (
        await page.js("return document.querySelector('.notice.budget').getAttribute('role')")
        == "alert"
    )
    assert model_server.requests_for(third) == []
    await page.shot("budget")


async def test_a_compaction_shows_as_a_quiet_notice(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    tag = f"wc{uuid.uuid4().hex[:10]}"
    filler = "The quick brown fox jumps over the lazy dog again and again. " * 13
    config = {
        "context_strategy": "summarize",
        "context_token_budget": 1_000,
        "summary_keep_share": 0.5,
        "tools": ["bash"],
        "workspace": str(tmp_path),
    }
    model_server.script(f"User: {tag}", [Reply(text=f"SUMMARY {tag}")])
    model_server.script(f"{tag} q1", [Reply(text=f"a1 {filler}")])
    model_server.script(f"{tag} q2", [Reply(text=f"a2 {filler}")])
    # The third run compacts before its first turn, then waits for an approval (so it is live).
    model_server.script(f"{tag} q3", [bash_call("echo compacted", "call_c"), Reply(text="ok")])
    async with httpx.AsyncClient(base_url=page.base_url, timeout=60) as http:
        first = await start(http, keys.full, f"{tag} q1 {filler}", config=config)
        session = first["session_id"]
        for n in (1, 2):
            if n == 2:
                await start(
                    http, keys.full, f"{tag} q2 {filler}", config=config, session_id=session
                )
            await _wait_idle(http, keys, session, runs=n)
        third = await start(
            http, keys.full, f"{tag} q3 {filler}", config=config, session_id=session
        )
    await page.open(f"/#/s/{session}", key=keys.full)
    await page.wait(
        f"return document.querySelector({qs(card('call_c') + ' .ask')})", what="q3 waiting"
    )
    notice = await shown(page, f"{run_node(third['run_id'])} .notice.compacted", "the compaction")
    assert "summarised to fit the context" in notice
    assert (
        await page.js("return document.querySelector('.notice.compacted').getAttribute('role')")
        is None
    )
    await page.shot("compacted")
    await page.click(f"{card('call_c')} button.approve")
    await run_status(page, third["run_id"], RunStatus.DONE)


async def _wait_idle(http: httpx.AsyncClient, keys: Keys, session: str, runs: int = 1) -> None:
    """Until the session's `runs` runs have all ended (bounded)."""
    for _ in range(600):
        page = (await http.get(f"/v1/runs?session_id={session}", headers=bearer(keys.full))).json()
        ended = [r for r in page["runs"] if r["status"] in ("DONE", "FAILED", "CANCELED")]
        if len(ended) >= runs:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session} still busy")


async def test_delete_a_chat_and_cancel_and_delete_a_busy_one(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    idle_prompt, busy_prompt = f"web delete idle {run_id}", f"web delete busy {run_id}"
    model_server.script(idle_prompt, [Reply(text="bye")])
    model_server.script(busy_prompt, [bash_call("echo waits", "call_d"), Reply(text="never")])
    async with httpx.AsyncClient(base_url=page.base_url, timeout=60) as http:
        idle = await start(http, keys.full, idle_prompt, config={"tools": []})
        await _wait_idle(http, keys, idle["session_id"])
        busy = await start(http, keys.full, busy_prompt, config={"workspace": str(tmp_path)})
        await next_event_http(http, keys, busy["run_id"])
        await page.open("/", key=keys.full)
        item = f'#sessions li[data-session-id="{idle["session_id"]}"]'
        busy_item = f'#sessions li[data-session-id="{busy["session_id"]}"]'
        await page.click(f"{item} button.delete-open")
        await page.shot("delete-confirm")
        await page.click(f"{item} button.delete-keep")  # changed my mind: nothing happens
        assert (
            await page.js(f"return document.querySelector({qs(item + ' .delete-open')}).hidden")
            is False
        )
        await page.click(f"{item} button.delete-open")
        await page.click(f"{item} button.delete-confirm")
        await page.wait(f"return !document.querySelector({qs(item)})", what="the chat gone")
        listed = (await http.get("/v1/sessions", headers=bearer(keys.full))).json()["sessions"]
        assert idle["session_id"] not in [s["session_id"] for s in listed]
        # A chat with a run waiting: refused (409), then "cancel the run and delete".
        await page.click(f"{busy_item} button.delete-open")
        await page.click(f"{busy_item} button.delete-confirm")
        error = await shown(page, f"{busy_item} .error", "the refusal")
        assert "still going" in error
        assert await page.js(f"return document.querySelector({qs(busy_item)}) !== null")
        await page.shot("delete-busy")
        await page.click(f"{busy_item} button.delete-cancel-active")
        await page.wait(f"return !document.querySelector({qs(busy_item)})", what="busy chat gone")
        run = (await http.get(f"/v1/runs/{busy['run_id']}", headers=bearer(keys.full))).json()
        assert run["status"] == RunStatus.CANCELED


async def next_event_http(http: httpx.AsyncClient, keys: Keys, run: str) -> None:
    """Until the run waits for its approval (bounded)."""
    for _ in range(600):
        view = (await http.get(f"/v1/runs/{run}", headers=bearer(keys.full))).json()
        if view["pending"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run} never waited")


async def test_a_child_call_decided_elsewhere_leaves_the_parents_card(
    page: Page, keys: Keys, worker: Worker, model_server: OfflineModelServer, run_id: str
) -> None:
    prompt, task = f"web parent elsewhere {run_id}", f"web child elsewhere {run_id}"
    delegate = ToolCallSpec("delegate_to_researcher", {"task": task}, id="c_p2")
    model_server.script(prompt, [Reply(tool_calls=[delegate]), Reply(text="Parent done.")])
    calc = ToolCallSpec("calculator", {"expression": "2+2"}, id="c_c2")
    # The child answers slowly after the decision: the page sees it decided before it ends.
    slow_answer = Reply(text="four " * 100, chunk_chars=5, delay_s=0.05)
    model_server.script(task, [Reply(tool_calls=[calc]), slow_answer])
    config = {
        "tools": [],
        "subagents": {"researcher": {"tools": ["calculator"], "approval": "require_all"}},
    }
    async with httpx.AsyncClient(base_url=page.base_url) as http:
        started = await start(http, keys.full, prompt, config=config)
        child = child_run_id(started["run_id"], "researcher", "c_p2")
        await page.open(f"/#/s/{started['session_id']}", key=keys.full)
        ask = qs(f"{card('c_c2')} .ask")
        await page.wait(f"return document.querySelector({ask})", what="the child's question")
        view = (await http.get(f"/v1/runs/{child}", headers=bearer(keys.full))).json()
        [pending] = view["pending"]
        r = await http.post(
            f"/v1/runs/{child}/tool-calls/c_c2/decision",
            json={"decision": "approve", "arguments_sha256": pending["arguments_sha256"]},
            headers=bearer(keys.full),
        )
        assert r.status_code == 200, r.text
    note = await shown(page, f"{card('c_c2')} .note", "the card's note")
    assert "decided on the sub-run" in note
    assert not await page.js(f"return document.querySelector({ask})")
    await run_status(page, started["run_id"], RunStatus.DONE)
