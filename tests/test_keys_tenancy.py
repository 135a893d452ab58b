"""API keys and tenants (issue 12, item 3), against the real PostgreSQL and Temporal: keys kept as
a hash and refused at once when revoked, idempotent starts, reads scoped to a tenant, the run
listing's cursor, a run that names another tenant's session, and the `agentrun keys` commands."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from agentrun.client import AgentRunClient, RunEnded, RunNotFound, RunRefused, SessionNotFound
from agentrun.contracts import AgentConfig, PendingCall, ToolCallRequest
from agentrun.db.models import DEFAULT_TENANT, ApiKey, Message, Run, RunStatus, Session
from agentrun.protocol.events import arguments_sha256
from agentrun.protocol.names import SA_TENANT, ErrorType
from agentrun.protocol.statuses import Scope, WaitKind
from agentrun.settings import Settings
from agentrun.store import (
    IdempotencyMismatch,
    NotFoundError,
    Repository,
    SessionNotFoundError,
)
from agentrun.store.tenancy import decode_cursor
from agentrun.testing.offline_model import OfflineModelServer, Reply
from tests.store_helpers import count, model_turn
from tests.test_cli import agentrun, cli_env

BOUND = 60
ALL_SCOPES = frozenset(Scope)


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def open_run(
    repo: Repository, tenant_: str, session_id: str | None = None, run_id: str | None = None
) -> Run:
    return await repo.open_run(
        run_id=run_id or f"run-{uuid.uuid4()}",
        session_id=session_id or f"s-{uuid.uuid4()}",
        model="test-model",
        config=AgentConfig(),
        prompt="question",
        workflow_run_id=str(uuid.uuid4()),
        tenant=tenant_,
    )


# -- API keys -----------------------------------------------------------------------------------


async def test_a_key_authenticates_until_it_is_revoked(repo: Repository) -> None:
    t = tenant()
    key, token = await repo.create_api_key(t, "ci", [Scope.READ, Scope.WRITE])
    assert token.startswith(f"ar_{key.id}_") and len(key.id) == 12
    assert (key.tenant, key.name, key.scopes) == (t, "ci", {Scope.READ, Scope.WRITE})
    assert key.revoked_at is None and key.last_used_at is None

    seen = await repo.authenticate_api_key(token)
    assert seen is not None and (seen.id, seen.tenant, seen.scopes) == (key.id, t, key.scopes)
    assert seen.last_used_at is not None
    # A hot key is marked used at most once a minute: a second call writes nothing.
    again = await repo.authenticate_api_key(token)
    assert again is not None and again.last_used_at == seen.last_used_at

    revoked = await repo.revoke_api_key("ci", tenant=t)
    assert revoked.id == key.id and revoked.revoked_at is not None
    # Refused at once: nothing is cached between the revoke and the next request.
    assert await repo.authenticate_api_key(token) is None
    # A revoked key stays listed (and revoking it again by id changes nothing).
    assert (await repo.revoke_api_key(key.id)).revoked_at == revoked.revoked_at
    [listed] = await repo.list_api_keys(t)
    assert listed.id == key.id and listed.revoked_at == revoked.revoked_at
    # Its name is free again: a new key with its own token, the old one still refused.
    fresh, fresh_token = await repo.create_api_key(t, "ci", [Scope.READ])
    assert fresh.id != key.id and await repo.authenticate_api_key(fresh_token) is not None
    assert await repo.authenticate_api_key(token) is None


async def test_forged_and_malformed_tokens_are_refused(repo: Repository) -> None:
    key, token = await repo.create_api_key(tenant(), "real", ALL_SCOPES)
    secret = token.split("_", 2)[2]
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    forged = [
        f"ar_{key.id}_{other_secret}",  # the right id, a wrong secret
        f"ar_{'z' * 12}_{secret}",  # an unknown id
        token + "x",
        token[:-1],
        token.replace("ar_", "AR_", 1),
        f"ar_{key.id}{secret}",
        "",
        "ar_",
        "ar__",
        "x" * 10_000,
        f"ar_{key.id}_{secret}\n",
        f"Bearer {token}",
    ]
    for candidate in forged:
        assert await repo.authenticate_api_key(candidate) is None, candidate
    assert await repo.authenticate_api_key(None) is None  # type: ignore[arg-type]
    assert await repo.authenticate_api_key(token) is not None


async def test_only_a_hash_of_the_secret_is_stored(repo: Repository) -> None:
    key, token = await repo.create_api_key(tenant(), "hashed", ALL_SCOPES)
    secret = token.split("_", 2)[2]
    async with repo.session() as db:
        row = (
            (await db.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key.id}))
            .mappings()
            .one()
        )
        stored = await db.get(ApiKey, key.id)
    assert stored is not None
    assert stored.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    for column, value in row.items():
        assert secret not in json.dumps(value, default=str), column
        assert token not in json.dumps(value, default=str), column
    # Nor is it anything the key's info carries.
    assert secret not in repr(key)


async def test_bad_key_requests_are_refused_and_write_nothing(repo: Repository) -> None:
    t = tenant()
    await repo.create_api_key(t, "taken", [Scope.READ])
    before = await count(repo, ApiKey, tenant=t)
    bad: list[tuple[Any, Any, Any, str]] = [
        ("", "n", [Scope.READ], "tenant"),
        ("has space", "n", [Scope.READ], "tenant"),
        ("x" * 101, "n", [Scope.READ], "tenant"),
        (t, "", [Scope.READ], "key name"),
        (t, "a/b", [Scope.READ], "key name"),
        (t, "n", [], "at least one scope"),
        (t, "n", ["admin"], "unknown scope 'admin'"),
        (t, "taken", [Scope.WRITE], "already has a live key named 'taken'"),
    ]
    for tenant_, name, scopes, message in bad:
        with pytest.raises(ValueError, match=message):
            await repo.create_api_key(tenant_, name, scopes)
    assert await count(repo, ApiKey, tenant=t) == before


async def test_concurrent_creates_of_one_name_make_one_key(repo: Repository) -> None:
    t = tenant()
    outcomes = await asyncio.gather(
        *(repo.create_api_key(t, "racy", ALL_SCOPES) for _ in range(6)), return_exceptions=True
    )
    made = [o for o in outcomes if isinstance(o, tuple)]
    refused = [o for o in outcomes if isinstance(o, ValueError)]
    assert len(made) == 1 and len(refused) == 5, outcomes
    assert all("already has a live key" in str(e) for e in refused)
    assert [k.id for k in await repo.list_api_keys(t)] == [made[0][0].id]


async def test_revoke_by_name_is_scoped_and_unknown_keys_are_not_found(repo: Repository) -> None:
    a, b = tenant(), tenant()
    key_a, token_a = await repo.create_api_key(a, "shared-name", ALL_SCOPES)
    key_b, token_b = await repo.create_api_key(b, "shared-name", ALL_SCOPES)
    with pytest.raises(NotFoundError, match="no API key"):
        await repo.revoke_api_key("nosuch", tenant=a)
    with pytest.raises(NotFoundError):
        await repo.revoke_api_key(key_b.id, tenant=a)  # another tenant's id
    # A name two tenants use needs the tenant.
    with pytest.raises(ValueError, match="several tenants"):
        await repo.revoke_api_key("shared-name")
    await repo.revoke_api_key("shared-name", tenant=b)
    assert await repo.authenticate_api_key(token_b) is None
    assert await repo.authenticate_api_key(token_a) is not None
    assert [k.id for k in await repo.list_api_keys(a)] == [key_a.id]


# -- idempotent starts --------------------------------------------------------------------------


async def test_an_idempotency_key_belongs_to_one_request(repo: Repository) -> None:
    a, b = tenant(), tenant()
    body, other_body = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()
    assert await repo.claim_idempotency_key(a, "k-1", body, "run-first") == ("run-first", True)
    # The same request again: the first run, not claimed again.
    assert await repo.claim_idempotency_key(a, "k-1", body, "run-second") == ("run-first", False)
    with pytest.raises(IdempotencyMismatch, match="different request") as info:
        await repo.claim_idempotency_key(a, "k-1", other_body, "run-third")
    assert isinstance(info.value, ValueError) and info.value.run_id == "run-first"
    # Keys are per tenant.
    assert await repo.claim_idempotency_key(b, "k-1", other_body, "run-b") == ("run-b", True)
    for key, sha in (("", body), ("has space", body), ("x" * 201, body), ("k-2", "nothex")):
        with pytest.raises(ValueError):
            await repo.claim_idempotency_key(a, key, sha, "run-x")
    # A start that failed gives its claim back (only its own).
    assert not await repo.release_idempotency_key(a, "k-1", "run-other")
    assert await repo.release_idempotency_key(a, "k-1", "run-first")
    assert await repo.claim_idempotency_key(a, "k-1", other_body, "run-4") == ("run-4", True)


async def test_concurrent_claims_of_one_key_give_one_run(repo: Repository) -> None:
    t, body = tenant(), hashlib.sha256(b"same").hexdigest()
    results = await asyncio.gather(
        *(repo.claim_idempotency_key(t, "race", body, f"run-{i}") for i in range(8))
    )
    assert len({run for run, _ in results}) == 1
    assert sum(claimed for _, claimed in results) == 1


# -- reads scoped to a tenant -------------------------------------------------------------------


async def test_another_tenants_run_and_session_are_not_found(repo: Repository) -> None:
    a, b = tenant(), tenant()
    run = await open_run(repo, a)
    assert run.tenant == a
    assert (await repo.get_run(run.id, tenant=a)).id == run.id
    assert (await repo.get_run(run.id)).id == run.id  # no tenant: the operator's view
    assert (await repo.get_session(run.session_id, tenant=a)).tenant == a

    with pytest.raises(NotFoundError) as other:
        await repo.get_run(run.id, tenant=b)
    with pytest.raises(NotFoundError) as missing:
        await repo.get_run("run-nosuch", tenant=b)
    # Indistinguishable: the same words as for an id that does not exist.
    assert str(other.value) == str(missing.value).replace("run-nosuch", run.id)
    with pytest.raises(NotFoundError) as other_s:
        await repo.get_session(run.session_id, tenant=b)
    with pytest.raises(NotFoundError) as missing_s:
        await repo.get_session("s-nosuch", tenant=b)
    assert str(other_s.value) == str(missing_s.value).replace("s-nosuch", run.session_id)
    page, _ = await repo.list_runs_page(b)
    assert page == []


async def test_cursor_paging_returns_every_run_once_newest_first(repo: Repository) -> None:
    t = tenant()
    session = f"s-{uuid.uuid4()}"
    made = []
    for i in range(7):
        made.append(await open_run(repo, t, session_id=None if i % 2 else session))
        if i % 2 == 0:  # ended, so the next run may use the session
            await repo.set_run_status(made[-1].id, RunStatus.DONE)
    await open_run(repo, tenant())  # another tenant's run is never listed
    seen: list[Run] = []
    cursor: str | None = None
    pages = []
    while True:
        page, cursor = await repo.list_runs_page(t, limit=3, cursor=cursor)
        pages.append(len(page))
        seen.extend(page)
        if cursor is None:
            break
    assert pages == [3, 3, 1]
    assert [r.id for r in seen] == [r.id for r in reversed(made)]
    keys = [(r.created_at, r.id) for r in seen]
    assert keys == sorted(keys, reverse=True)
    # A run started meanwhile does not shift the pages a client has yet to read.
    first, cursor = await repo.list_runs_page(t, limit=3)
    newer = await open_run(repo, t)
    rest, _ = await repo.list_runs_page(t, limit=10, cursor=cursor)
    assert [r.id for r in first + rest] == [r.id for r in reversed(made)]
    assert (await repo.list_runs_page(t, limit=1))[0][0].id == newer.id

    in_session, _ = await repo.list_runs_page(t, session_id=session, limit=200)
    assert {r.id for r in in_session} == {r.id for i, r in enumerate(made) if i % 2 == 0}
    await repo.set_run_status(made[1].id, RunStatus.RUNNING)
    running, _ = await repo.list_runs_page(t, status=RunStatus.RUNNING)
    assert [r.id for r in running] == [made[1].id]
    done, _ = await repo.list_runs_page(t, status=RunStatus.DONE, session_id=session, limit=2)
    assert [r.id for r in done] == [made[6].id, made[4].id]


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGEgY3Vyc29y", "MjAyNi0wMS0wMQ", "eHx5", "x" * 500, "bm8tc2VwYXJhdG9y"],
)
async def test_a_malformed_cursor_or_limit_is_refused(repo: Repository, cursor: str) -> None:
    with pytest.raises(ValueError, match="malformed cursor"):
        await repo.list_runs_page("default", cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 201, True])
async def test_a_limit_out_of_range_is_refused(repo: Repository, limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        await repo.list_runs_page("default", limit=limit)


async def test_sessions_page_newest_first_with_titles_and_only_the_tenants(
    repo: Repository,
) -> None:
    t = tenant()
    runs = [await open_run(repo, t) for _ in range(5)]
    await open_run(repo, tenant())  # another tenant's session is never listed
    seen = []
    cursor: str | None = None
    while True:
        page, cursor = await repo.list_sessions_page(t, limit=2, cursor=cursor)
        seen.extend(page)
        if cursor is None:
            break
    assert [s.id for s in seen] == [r.session_id for r in reversed(runs)]
    assert all(s.title == "question" and s.active_run_id for s in seen)
    with pytest.raises(ValueError, match="limit"):
        await repo.list_sessions_page(t, limit=0)


async def test_a_cursor_round_trips_its_run(repo: Repository) -> None:
    t = tenant()
    runs = [await open_run(repo, t) for _ in range(2)]
    _, cursor = await repo.list_runs_page(t, limit=1)
    assert cursor is not None and decode_cursor(cursor) == (runs[1].created_at, runs[1].id)


async def test_waiting_runs_and_their_pending_calls(repo: Repository) -> None:
    t = tenant()
    waiting, plain, result_only = [await open_run(repo, t) for _ in range(3)]
    bash = ToolCallRequest(id="call_b", name="bash", arguments='{"command": "ls"}')
    pick = ToolCallRequest(id="call_c", name="pick", arguments='{"n": 1}')
    auto = ToolCallRequest(id="call_a", name="ls", arguments="{}")
    for run in (waiting, plain, result_only):
        await repo.set_run_status(run.id, RunStatus.RUNNING)
    await model_turn(repo, waiting.id, waiting.session_id, bash, pick, auto)
    await repo.request_waits(
        waiting.id, [pending(bash, WaitKind.APPROVAL), pending(pick, WaitKind.CLIENT_RESULT)]
    )
    await model_turn(repo, result_only.id, result_only.session_id, pick)
    await repo.request_waits(result_only.id, [pending(pick, WaitKind.CLIENT_RESULT)])

    listed, _ = await repo.list_runs_page(t, waiting_approval=True)
    assert [r.id for r in listed] == [waiting.id]
    calls = await repo.pending_tool_calls(waiting.id)
    # The auto call waits for nothing; the two others with their arguments and hashes.
    assert [(c.tool_call_id, c.status) for c in calls] == [
        ("call_b", "pending_approval"),
        ("call_c", "pending"),
    ]
    assert [c.arguments_sha256 for c in calls] == [
        arguments_sha256(bash.arguments),
        arguments_sha256(pick.arguments),
    ]
    assert [c.tool_call_id for c in await repo.pending_tool_calls(result_only.id)] == ["call_c"]
    assert await repo.pending_tool_calls(plain.id) == []

    await repo.record_tool_result(
        session_id=waiting.session_id,
        run_id=waiting.id,
        tool_call_id="call_c",
        result="1",
        is_error=False,
    )
    assert [c.tool_call_id for c in await repo.pending_tool_calls(waiting.id)] == ["call_b"]
    # Once the run ended nothing waits, and it is not listed as waiting.
    await repo.set_run_status(waiting.id, RunStatus.CANCELED)
    assert await repo.pending_tool_calls(waiting.id) == []
    assert (await repo.list_runs_page(t, waiting_approval=True))[0] == []


def pending(call: ToolCallRequest, kind: WaitKind) -> PendingCall:
    return PendingCall(
        tool_call_id=call.id,
        name=call.name,
        kind=kind,
        arguments=call.arguments,
        arguments_sha256=arguments_sha256(call.arguments),
        turn=1,
    )


# -- a run that names another tenant's session --------------------------------------------------


async def test_open_refuses_another_tenants_session_and_writes_nothing(repo: Repository) -> None:
    a, b = tenant(), tenant()
    holder = await open_run(repo, a)  # holds its session: busy
    messages = await count(repo, Message, session_id=holder.session_id)
    intruder = f"run-{uuid.uuid4()}"
    # Refused as not found, never as busy: B learns nothing of A's active run.
    with pytest.raises(SessionNotFoundError, match="no session") as info:
        await open_run(repo, b, session_id=holder.session_id, run_id=intruder)
    assert holder.id not in str(info.value)
    assert await repo.find_run(intruder) is None
    assert await count(repo, Message, session_id=holder.session_id) == messages
    session = await repo.get_session(holder.session_id)
    assert (session.tenant, session.active_run_id) == (a, holder.id)
    with pytest.raises(ValueError, match="tenant"):
        await open_run(repo, "not valid!")


# -- the same through Temporal: the client and the workflow -------------------------------------


async def test_a_run_of_tenant_b_on_tenant_as_session_is_refused(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    a, b = tenant(), tenant()
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    prompt = f"tenant a {uuid.uuid4()}"
    model_server.script(prompt, [Reply(text="Hello A.")])
    run_a = await client.start(prompt, tenant=a, config={"tools": []})
    result = await asyncio.wait_for(run_a.result(), BOUND)
    assert result.status == RunStatus.DONE
    row = await repo.get_run(run_a.id, tenant=a)
    assert row.tenant == a and (await repo.get_session(row.session_id, tenant=a)).tenant == a
    assert (await run_a.describe()).typed_search_attributes.get(SA_TENANT) == a
    messages = await count(repo, Message, session_id=row.session_id)

    # With a store, the client refuses before anything starts.
    early = f"run-{uuid.uuid4()}"
    with pytest.raises(SessionNotFound) as info:
        await client.start("let me in", run_id=early, session_id=row.session_id, tenant=b)
    assert info.value.session_id == row.session_id
    with pytest.raises(RunNotFound):
        await client.handle(early).status()
    # Another tenant's run id is taken, and its run is not handed out.
    with pytest.raises(RunEnded, match="already used"):
        await client.start("let me in", run_id=run_a.id, tenant=b)

    # Without one (or in a race), the run's open refuses it: a typed refusal, nothing written.
    bare = AgentRunClient(temporal_env.client, settings.task_queue)
    late = await bare.start("let me in", session_id=row.session_id, tenant=b)
    with pytest.raises(RunRefused) as refused:
        await asyncio.wait_for(late.result(), BOUND)
    assert refused.value.reason_type == ErrorType.SESSION_NOT_FOUND
    assert refused.value.error_type == ErrorType.RUN_REFUSED
    assert await repo.find_run(late.id) is None
    assert await count(repo, Message, session_id=row.session_id) == messages
    async with repo.session() as db:
        session = (await db.execute(select(Session).where(Session.id == row.session_id))).one()
    assert session[0].tenant == a and session[0].active_run_id is None


async def test_a_run_without_a_tenant_is_the_default_tenants(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    worker: Worker,
    repo: Repository,
    model_server: OfflineModelServer,
) -> None:
    client = AgentRunClient(temporal_env.client, settings.task_queue, store=repo)
    prompt = f"default tenant {uuid.uuid4()}"
    model_server.script(prompt, [Reply(text="Default.")])
    run = await client.start(prompt, config={"tools": []})
    assert (await asyncio.wait_for(run.result(), BOUND)).status == RunStatus.DONE
    assert (await repo.get_run(run.id, tenant=DEFAULT_TENANT)).tenant == DEFAULT_TENANT
    assert (await run.describe()).typed_search_attributes.get(SA_TENANT) == DEFAULT_TENANT
    with pytest.raises(ValidationError, match="tenant"):
        await client.start(prompt, tenant="no spaces allowed")


# -- the CLI ------------------------------------------------------------------------------------


async def test_keys_create_list_and_revoke_from_the_cli(
    settings: Settings, repo: Repository
) -> None:
    env = cli_env(settings)
    t = tenant()
    made = await agentrun(env, "keys", "create", "--tenant", t, "--name", "ci")
    assert made.code == 0, made
    token = made.out.strip().splitlines()[-1]
    assert "shown this once" in made.out and token.startswith("ar_")
    key = await repo.authenticate_api_key(token)
    assert key is not None and key.scopes == ALL_SCOPES and key.tenant == t

    as_json = await agentrun(
        env, "keys", "create", "--tenant", t, "--name", "reader", "--scope", "read", "--json"
    )
    created = json.loads(as_json.out)
    assert created["scopes"] == ["read"] and created["token"].startswith(f"ar_{created['id']}_")

    listed = await agentrun(env, "keys", "list", "--tenant", t, "--json")
    rows = [json.loads(line) for line in listed.out.splitlines()]
    assert {r["name"] for r in rows} == {"ci", "reader"}
    assert all("token" not in r and "secret_sha256" not in r for r in rows)
    secret = token.split("_", 2)[2]
    human = await agentrun(env, "keys", "list", "--tenant", t)
    assert human.code == 0 and "ci" in human.out and "reader" in human.out
    assert secret not in listed.out + human.out

    revoked = await agentrun(env, "keys", "revoke", "ci", "--tenant", t)
    assert revoked.code == 0 and "revoked key" in revoked.out, revoked
    assert await repo.authenticate_api_key(token) is None
    again = await agentrun(env, "keys", "revoke", key.id, "--json")
    assert json.loads(again.out)["already_revoked"] is True


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("create", "--tenant", "bad tenant", "--name", "x"), 2, "the tenant 'bad tenant'"),
        (("create", "--name", "x", "--scope", "admin"), 2, "invalid choice: 'admin'"),
        (("create", "--tenant", "dup-{t}", "--name", "x"), 1, "already has a live key"),
        (("revoke", "nosuch-{t}"), 4, "no API key with id or name"),
        (("list", "--tenant", "a b"), 2, "the tenant 'a b'"),
    ],
)
async def test_keys_errors_are_one_line_with_their_exit_code(
    settings: Settings, repo: Repository, args: tuple[str, ...], code: int, message: str
) -> None:
    t = uuid.uuid4().hex[:8]
    await repo.create_api_key(f"dup-{t}", "x", ALL_SCOPES)
    before = await count(repo, ApiKey)
    done = await agentrun(cli_env(settings), "keys", *(a.format(t=t) for a in args))
    assert done.code == code, done
    assert "Traceback" not in done.err and message in done.err, done.err
    if code != 2 or "invalid choice" not in done.err:
        assert len(done.err.strip().splitlines()) == 1, done.err
    assert await count(repo, ApiKey) == before
