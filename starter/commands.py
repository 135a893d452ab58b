"""The run-facing commands of the `agentrun` CLI: run, follow, approve, reject, cancel, status,
transcript, ls and demo. Every failure is one line that says what to do, with a documented
exit code (see EXIT_* in starter.cli)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from agentrun.contracts import AgentConfig, ToolDecision, strict_validate
from agentrun.db.models import RunEvent, RunStatus
from agentrun.db.repository import Repository, SessionBusyError
from agentrun.settings import Settings, SettingsError, load_settings
from starter.render import Renderer

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4

DEMO_PROMPT = (
    "List the files in the workspace, work out 17 * 23 with the calculator, "
    "then run `wc -l notes.txt`."
)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def web_ui_link(settings: Settings, run_id: str) -> str:
    host, _ = settings.temporal_host_port
    host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    return (
        f"http://{host}:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{run_id}"
    )


async def temporal(settings: Settings) -> Client:
    from worker import connect_client

    try:
        client = await asyncio.wait_for(connect_client(settings), 5)
        await asyncio.wait_for(client.service_client.check_health(), 5)
        return client
    except Exception:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address}: start it with "
            "`agentrun dev` or set TEMPORAL_ADDRESS",
            EXIT_UNREACHABLE,
        ) from None


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Repository]:
    from sqlalchemy import text

    repo = Repository.connect(settings.sqlalchemy_url, pool_size=2)
    try:
        try:
            async with repo.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
        except Exception:
            raise CliError(
                f"cannot reach PostgreSQL at {settings.database_url_display}: start it with "
                "`agentrun dev` or set AGENTRUN_DATABASE_URL",
                EXIT_UNREACHABLE,
            ) from None
        yield repo
    finally:
        await repo.close()


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return getattr(exc, "message", None) or str(exc)


def _exit_for(status: str) -> int:
    return EXIT_OK if status == RunStatus.DONE else EXIT_FAILED


async def _usage(repo: Repository, run_id: str, started: float | None) -> dict[str, Any]:
    run = await repo.get_run(run_id)
    usage: dict[str, Any] = {
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "llm_calls": run.llm_call_count,
        "tool_calls": run.tool_call_count,
        "turns": run.turns,
    }
    end = run.finished_at or run.updated_at
    usage["seconds"] = (
        round(time.monotonic() - started, 2)
        if started is not None
        else round((end - run.created_at).total_seconds(), 2)
    )
    return usage


# -- following a run ---------------------------------------------------------------------------


class Follower:
    """Follows a run's event log; answers approval requests; handles Ctrl-C."""

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        client: Client | None,
        run_id: str,
        *,
        as_json: bool,
        auto_approve: bool = False,
        interactive: bool = False,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.client = client
        self.run_id = run_id
        self.as_json = as_json
        self.auto_approve = auto_approve
        self.interactive = interactive and not as_json
        self.renderer = Renderer(console)
        self.cursor = 0
        self.detached = False

    async def follow(self, after_seq: int = 0) -> str:
        self.cursor = after_seq
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        events = self.repo.follow_events(self.run_id, after_seq, poll_interval=0.5)
        try:
            while True:
                nxt = asyncio.ensure_future(anext(events))
                stop = asyncio.ensure_future(interrupted.wait())
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    nxt.cancel()
                    interrupted.clear()
                    if await self._on_interrupt():
                        self.detached = True
                        break
                    continue
                stop.cancel()
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                self.cursor = event.seq
                await self._show(event)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            # remove_signal_handler leaves Python's default handler; put back asyncio.run's,
            # so a later Ctrl-C still unwinds through the callers' clean-up.
            signal.signal(signal.SIGINT, previous)
            self.renderer.end_text()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
        run = await self.repo.get_run(self.run_id)
        return run.status

    async def _show(self, event: RunEvent) -> None:
        if self.as_json:
            print_json({"seq": event.seq, "type": event.type, "data": event.data})
        else:
            self.renderer.event(event.type, event.data)
        if event.type == "tool.approval_requested":
            await self._answer_approval(event.data)

    async def _answer_approval(self, data: dict[str, Any]) -> None:
        if not (self.auto_approve or self.interactive) or self.client is None:
            return
        call = await self.repo.get_tool_call(self.run_id, data["tool_call_id"])
        if call.decision is not None or call.status != "pending_approval":
            return  # an old request, already decided
        from starter.api import decide

        kwargs: dict[str, Any] = {"arguments_sha256": data["arguments_sha256"]}
        decision: str | None
        if self.auto_approve:
            decision, kwargs["decided_by"] = "approve", "agentrun run --yes"
        else:
            decision, extra = await self._ask_decision(data)
            if decision is None:
                console.print("[dim]left undecided; the run keeps waiting[/]")
                return
            kwargs.update(extra)
        try:
            recorded = await decide(
                self.client, self.run_id, data["tool_call_id"], decision, **kwargs
            )
        except WorkflowUpdateFailedError as exc:
            console.print(f"[yellow]! decision refused: {_cause(exc)}[/]")
            return
        if not self.as_json and self.auto_approve:
            console.print(f"[dim]auto-approved {recorded.name} (--yes)[/]")

    async def _ask_decision(self, data: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        self.renderer.end_text()
        answer = await asyncio.to_thread(
            Prompt.ask,
            f"Run [bold]{data['name']}[/] {data['arguments']}? "
            r"\[a]pprove, \[e]dit arguments, \[r]eject, \[l]eave",
            choices=["a", "e", "r", "l"],
            default="a",
            console=console,
        )
        who = "cli"
        if answer == "a":
            return "approve", {"decided_by": who}
        if answer == "r":
            reason = await asyncio.to_thread(Prompt.ask, "Reason", default="", console=console)
            return "reject", {"decided_by": who, "reason": reason or None}
        if answer == "e":
            while True:
                raw = await asyncio.to_thread(
                    Prompt.ask, "Arguments (JSON)", default=data["arguments"], console=console
                )
                try:
                    edited = json.loads(raw)
                except ValueError as exc:
                    console.print(f"[red]not JSON: {exc}[/]")
                    continue
                return "approve_with_edits", {"decided_by": who, "arguments": edited}
        return None, {}

    async def _on_interrupt(self) -> bool:
        """Ctrl-C: ask whether to cancel the run or detach; True means stop following."""
        self.renderer.end_text()
        if not self.interactive or self.client is None:
            self._detach_hint()
            return True
        answer = await asyncio.to_thread(
            Prompt.ask,
            "\nCancel the run, or detach and leave it running?",
            choices=["cancel", "detach", "continue"],
            default="detach",
            console=console,
        )
        if answer == "continue":
            return False
        if answer == "cancel":
            from starter.api import cancel_run

            result = await cancel_run(self.client, self.run_id, requested_by="agentrun cli")
            console.print(f"{result.status}: {result.message}")
            return False  # keep following to the CANCELED event
        self._detach_hint()
        return True

    def _detach_hint(self) -> None:
        err.print(
            f"detached; the run goes on. Follow it again with: agentrun follow {self.run_id} "
            f"--from {self.cursor}"
        )


# -- commands ----------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> AgentConfig:
    fields: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            fields = json.loads(args.config)
        except ValueError as exc:
            raise CliError(f"--config is not JSON: {exc}", EXIT_USAGE) from None
        if not isinstance(fields, dict):
            raise CliError("--config must be a JSON object of AgentConfig fields", EXIT_USAGE)
    if args.model is not None:
        fields["model"] = args.model
    if args.tools is not None:
        fields["tools"] = [t for t in args.tools.split(",") if t]
    if args.workspace:
        fields["workspace"] = str(Path(args.workspace).resolve())
    if args.approval:
        fields["approval"] = args.approval
    try:
        return strict_validate(AgentConfig, fields)
    except ValueError as exc:
        raise CliError(f"bad option: {_first_error(exc, 'config')}", EXIT_USAGE) from None


def _first_error(exc: Exception, within: str = "") -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        where = ".".join(str(p) for p in (*([within] if within else []), *e["loc"]))
        if e["type"] == "extra_forbidden":
            return f"{where}: unknown field (this agentrun does not know it)"
        return f"{where}: {e['msg']}"
    return str(exc)


async def start_and_follow(
    settings: Settings,
    prompt: str,
    config: AgentConfig,
    *,
    session_id: str | None,
    run_id: str | None,
    as_json: bool,
    auto_approve: bool,
    interactive: bool,
) -> tuple[str, str]:
    from starter.api import start_run

    client = await temporal(settings)
    async with database(settings) as repo:
        started = time.monotonic()
        try:
            handle = await start_run(
                client,
                settings.task_queue,
                prompt,
                session_id=session_id,
                run_id=run_id,
                config=config,
                repo=repo,
            )
        except SessionBusyError as exc:
            raise CliError(str(exc)) from None
        except ValueError as exc:
            raise CliError(f"bad input: {_first_error(exc)}", EXIT_USAGE) from None
        if not as_json:
            console.print(f"[dim]run {handle.id} · {web_ui_link(settings, handle.id)}[/]")
        await _wait_for_run_row(repo, handle)
        follower = Follower(
            settings,
            repo,
            client,
            handle.id,
            as_json=as_json,
            auto_approve=auto_approve,
            interactive=interactive,
        )
        status = await follower.follow(0)
        usage = await _usage(repo, handle.id, started)
        _print_end(handle.id, status, usage, as_json, follower.detached)
        return handle.id, status


async def _wait_for_run_row(repo: Repository, handle: Any) -> None:
    # The run row appears when a worker picks the run up; wait for it, bounded.
    deadline = time.monotonic() + 60
    while await repo.find_run(handle.id) is None:
        desc = await handle.describe()
        if desc.status is not None and desc.status.name != "RUNNING":
            try:
                await handle.result()
            except Exception as exc:
                raise CliError(f"run refused: {_cause(exc)}") from None
        if time.monotonic() > deadline:
            raise CliError(
                "the run did not start within 60 s: is a worker polling task queue "
                f"{handle.id!r}? Start one with `agentrun dev` or `agentrun worker`"
            )
        await asyncio.sleep(0.2)


def _print_end(
    run_id: str, status: str, usage: dict[str, Any], as_json: bool, detached: bool
) -> None:
    if as_json:
        print_json({"run_id": run_id, "status": status, "usage": usage, "detached": detached})
        return
    console.print(
        f"[dim]{usage['prompt_tokens']}+{usage['completion_tokens']} tokens · "
        f"{usage['llm_calls']} model calls · {usage['tool_calls']} tool calls · "
        f"{usage['turns']} turns · {usage['seconds']}s[/]"
    )


def _interactive(args: argparse.Namespace) -> bool:
    return sys.stdin.isatty() and not args.no_input and not args.json


async def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    _, status = await start_and_follow(
        settings,
        args.prompt,
        _config(args),
        session_id=args.session,
        run_id=args.run_id,
        as_json=args.json,
        auto_approve=args.yes,
        interactive=_interactive(args),
    )
    return _exit_for(status)


async def cmd_follow(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if args.from_seq < 0:
        raise CliError("--from takes a sequence number of 0 or more", EXIT_USAGE)
    async with database(settings) as repo:
        if await repo.find_run(args.run_id) is None:
            raise CliError(
                f"no run {args.run_id!r} in the database; list runs with `agentrun ls`",
                EXIT_NOT_FOUND,
            )
        client = None
        if args.yes or _interactive(args):
            client = await temporal(settings)
        follower = Follower(
            settings,
            repo,
            client,
            args.run_id,
            as_json=args.json,
            auto_approve=args.yes,
            interactive=_interactive(args),
        )
        status = await follower.follow(args.from_seq)
        usage = await _usage(repo, args.run_id, None)
        _print_end(args.run_id, status, usage, args.json, follower.detached)
        return _exit_for(status)


async def _not_found_or_ended(client: Client, run_id: str) -> CliError:
    try:
        desc = await client.get_workflow_handle(run_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return CliError(f"no run {run_id!r}; list runs with `agentrun ls`", EXIT_NOT_FOUND)
        raise
    status = desc.status.name if desc.status else "UNKNOWN"
    return CliError(f"run {run_id!r} already ended ({status})")


async def cmd_decide(args: argparse.Namespace) -> int:
    from starter.api import decide

    settings = settings_or_exit()
    if args.command == "reject":
        decision, arguments = "reject", None
    elif args.args is not None:
        try:
            arguments = json.loads(args.args)
        except ValueError as exc:
            raise CliError(f"--args is not JSON: {exc}", EXIT_USAGE) from None
        if not isinstance(arguments, dict):
            raise CliError("--args must be a JSON object", EXIT_USAGE)
        decision = "approve_with_edits"
    else:
        decision, arguments = "approve", None
    client = await temporal(settings)
    who = args.by or "agentrun cli"
    if args.signal:
        try:
            payload = strict_validate(
                ToolDecision,
                {
                    "tool_call_id": args.tool_call_id,
                    "decision": decision,
                    "arguments": arguments,
                    "decided_by": who,
                    "reason": args.reason,
                },
            )
        except ValueError as exc:
            raise CliError(f"bad decision: {_first_error(exc)}", EXIT_USAGE) from None
        try:
            await client.get_workflow_handle(args.run_id).signal("tool_decision", payload)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise await _not_found_or_ended(client, args.run_id) from None
            raise
        out = {"run_id": args.run_id, "tool_call_id": args.tool_call_id, "signalled": decision}
        print_json(out) if args.json else console.print(f"signalled {decision}")
        return EXIT_OK
    try:
        recorded = await decide(
            client,
            args.run_id,
            args.tool_call_id,
            decision,
            arguments=arguments,
            decided_by=who,
            reason=args.reason,
        )
    except WorkflowUpdateFailedError as exc:
        raise CliError(f"decision refused: {_cause(exc)}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise await _not_found_or_ended(client, args.run_id) from None
        raise
    if args.json:
        print_json(recorded.model_dump())
    else:
        console.print(
            f"{recorded.decision} {recorded.name} ({recorded.tool_call_id}) "
            f"by {recorded.decided_by}"
        )
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    from starter.api import cancel_run

    settings = settings_or_exit()
    client = await temporal(settings)
    try:
        answer = await cancel_run(client, args.run_id, reason=args.reason, requested_by="cli")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliError(
                f"no run {args.run_id!r}; list runs with `agentrun ls`", EXIT_NOT_FOUND
            ) from None
        raise
    if args.json:
        print_json({"run_id": args.run_id, **answer.model_dump()})
    else:
        console.print(f"{answer.status}: {answer.message}")
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    from starter.api import run_status

    settings = settings_or_exit()
    client = await temporal(settings)
    async with database(settings) as repo:
        run = await repo.find_run(args.run_id)
        if run is None:
            raise await _not_found_or_ended(client, args.run_id)
        view: dict[str, Any] = {
            "run_id": run.id,
            "session_id": run.session_id,
            "status": run.status,
            "model": run.model,
            "turns": run.turns,
            "error": run.error,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "usage": await _usage(repo, run.id, None),
            "pending": [],
            "web_ui": web_ui_link(settings, run.id),
        }
        if not RunStatus(run.status).terminal:
            try:
                live = await asyncio.wait_for(run_status(client, run.id), 10)
                view["phase"] = live.phase
                view["pending"] = [p.model_dump() for p in live.pending]
            except Exception as exc:
                view["phase"] = f"unknown (query failed: {_cause(exc)}; is a worker running?)"
    if args.json:
        print_json(view)
        return EXIT_OK
    table = Table(show_header=False, box=None)
    for key in ("run_id", "session_id", "status", "phase", "model", "turns", "error", "web_ui"):
        if view.get(key) is not None:
            table.add_row(key, str(view[key]))
    u = view["usage"]
    table.add_row(
        "usage",
        f"{u['prompt_tokens']}+{u['completion_tokens']} tokens, {u['llm_calls']} model calls, "
        f"{u['tool_calls']} tool calls",
    )
    for p in view["pending"]:
        table.add_row("pending", f"{p['kind']} {p['tool_call_id']} {p['name']} {p['arguments']}")
    console.print(table)
    return EXIT_OK


async def cmd_transcript(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if bool(args.run_id) == bool(args.session):
        raise CliError("give a RUN_ID or --session ID (one of them)", EXIT_USAGE)
    async with database(settings) as repo:
        if args.run_id:
            if await repo.find_run(args.run_id) is None:
                raise CliError(f"no run {args.run_id!r}", EXIT_NOT_FOUND)
            messages = await repo.run_messages(args.run_id)
        else:
            messages = await repo.session_messages(args.session)
            if not messages:
                raise CliError(f"no messages in session {args.session!r}", EXIT_NOT_FOUND)
    for m in messages:
        if args.json:
            print_json(
                {
                    "run_id": m.run_id,
                    "turn": m.turn,
                    "role": m.role,
                    "content": m.content,
                    "tool_calls": m.tool_calls,
                    "tool_call_id": m.tool_call_id,
                    "created_at": m.created_at,
                }
            )
            continue
        style = {"user": "bold", "assistant": "green", "tool": "cyan"}.get(m.role, "")
        label = m.role if m.role != "tool" else f"tool {m.name} ({m.tool_call_id})"
        console.print(f"[{style}]{label}:[/] ", end="")
        console.print(m.content or "", markup=False)
        for c in m.tool_calls or []:
            console.print(f"  [cyan]→ {c['function']['name']}[/] {c['function']['arguments']}")
    return EXIT_OK


async def cmd_ls(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    client = await temporal(settings)
    clauses = ["WorkflowType = 'agentrun.AgentRun'"]
    if args.status:
        status = args.status.upper()
        if status not in RunStatus.__members__:
            raise CliError(
                f"--status must be one of {', '.join(RunStatus.__members__)}", EXIT_USAGE
            )
        clauses.append(f"AgentRunStatus = '{status}'")
    if args.session:
        clauses.append(f"AgentSessionId = '{args.session.replace(chr(39), '')}'")
    if args.waiting:
        clauses.append("AgentWaitingApproval = true")
    query = " AND ".join(clauses)
    rows: list[dict[str, Any]] = []
    async for wf in client.list_workflows(query, limit=args.limit):
        sa = wf.typed_search_attributes
        from workflows.agent import SA_MODEL, SA_RUN_STATUS, SA_SESSION_ID, SA_WAITING_APPROVAL

        rows.append(
            {
                "run_id": wf.id,
                "status": sa.get(SA_RUN_STATUS),
                "session_id": sa.get(SA_SESSION_ID),
                "model": sa.get(SA_MODEL),
                "waiting_approval": sa.get(SA_WAITING_APPROVAL),
                "started": wf.start_time,
                "workflow_status": wf.status.name if wf.status else None,
            }
        )
    if args.json:
        for row in rows:
            print_json(row)
        return EXIT_OK
    table = Table("run", "status", "session", "model", "started")
    for row in rows:
        status = str(row["status"]) + (" ⏸" if row["waiting_approval"] else "")
        table.add_row(
            row["run_id"],
            status,
            str(row["session_id"]),
            str(row["model"]),
            row["started"].strftime("%Y-%m-%d %H:%M:%S") if row["started"] else "",
        )
    console.print(table)
    return EXIT_OK


async def _worker_polling(client: Client, task_queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return len(resp.pollers) > 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from agentrun.devstack import DevStack
    from worker import run_worker

    settings = settings_or_exit()
    interactive = sys.stdin.isatty() and not args.yes
    if not interactive and not args.yes and not settings.uses_offline_model:
        # Approvals are only given for the user against the offline model, whose tool calls
        # are scripted; a real model's calls need a person or an explicit --yes.
        raise CliError(
            f"no terminal to ask for approvals at, and a real model ({settings.model} at "
            f"{settings.openai_base_url}) is configured: run the demo at a terminal, or pass "
            "--yes to approve every call it makes",
            EXIT_USAGE,
        )
    stack = DevStack(settings)
    with console.status("bringing up the embedded stack (Temporal + PostgreSQL)..."):
        await stack.up()
    for note in stack.notes:
        console.print(f"[dim]• {note}[/]")
    if settings.uses_offline_model:
        console.print(
            "[yellow]No model configured: using agentrun's offline scripted model. Set "
            "OPENAI_BASE_URL, OPENAI_API_KEY and AGENTRUN_MODEL for a real one.[/]"
        )
    workspace = settings.tool_workspace_root / "demo"  # tools work only under the root
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "notes.txt").write_text("agentrun demo workspace\nsecond line\n")
    (workspace / "plan.md").write_text("# Plan\n1. list files\n2. multiply\n3. count lines\n")
    stop, ready = asyncio.Event(), asyncio.Event()
    worker_task: asyncio.Task[None] | None = None
    client = await temporal(settings)
    try:
        if await _worker_polling(client, settings.task_queue):
            console.print(f"[dim]• a worker is already polling {settings.task_queue!r}[/]")
        else:
            worker_task = asyncio.create_task(
                run_worker(settings, stop, migrate=False, ready=ready)
            )
            await asyncio.wait(
                [worker_task, asyncio.create_task(ready.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if worker_task.done():
                worker_task.result()
        if not interactive:
            console.print("[dim]no terminal to ask at (or --yes): approvals are given for you[/]")
        console.print(f"[bold]prompt:[/] {args.prompt}")
        run_id, status = await start_and_follow(
            settings,
            args.prompt,
            AgentConfig(workspace=str(workspace)),
            session_id=None,
            run_id=None,
            as_json=False,
            auto_approve=not interactive,
            interactive=interactive,
        )
        console.print(f"[bold]Web UI:[/] {web_ui_link(settings, run_id)}")
        # At a terminal, keep the stack up so the Web UI link opens the run; in a script, stop.
        keep = args.keep_running or (sys.stdin.isatty() and not args.exit)
        if keep and (stack.temporal or stack.postgres):
            console.print("The stack keeps running so you can open the link; Ctrl-C stops it.")
            stop_asked = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop_asked.set)
            await stop_asked.wait()
            console.print("stopping the stack...")
        return _exit_for(status)
    finally:
        stop.set()
        if worker_task is not None:
            await asyncio.gather(worker_task, return_exceptions=True)
        await asyncio.to_thread(stack.down)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="start a run and follow it live")
    run.add_argument("prompt")
    run.add_argument("--session", help="session id; runs in one session share a conversation")
    run.add_argument("--run-id", help="run id; starting the same id again returns that run")
    run.add_argument("--model", help="model name (default AGENTRUN_MODEL)")
    run.add_argument("--tools", help="comma-separated built-in tool names; '' for none")
    run.add_argument(
        "--approval",
        choices=["tool_default", "require_all", "allow_safe", "allow_listed", "skip_all"],
        help="approval preset (default tool_default: bash asks)",
    )
    run.add_argument("--workspace", help="folder for the file and shell tools")
    run.add_argument(
        "--config",
        metavar="JSON",
        help="agent config as a JSON object (AgentConfig fields; the options above win)",
    )
    run.add_argument("--yes", action="store_true", help="approve every call that asks")
    run.add_argument("--no-input", action="store_true", help="never prompt; Ctrl-C detaches")
    _json_flag(run)
    run.set_defaults(handler=cmd_run, is_async=True)

    follow = sub.add_parser("follow", help="follow a run's events live, from any point")
    follow.add_argument("run_id")
    follow.add_argument(
        "--from",
        dest="from_seq",
        type=int,
        default=0,
        metavar="SEQ",
        help="start after this event seq",
    )
    follow.add_argument("--yes", action="store_true", help="approve every call that asks")
    follow.add_argument("--no-input", action="store_true", help="never prompt")
    _json_flag(follow)
    follow.set_defaults(handler=cmd_follow, is_async=True)

    for name, helptext in (("approve", "approve a call that waits"), ("reject", "reject one")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run_id")
        p.add_argument("tool_call_id")
        p.add_argument("--by", help="who decides (recorded)")
        p.add_argument("--reason", required=name == "reject", help="why (recorded)")
        if name == "approve":
            p.add_argument("--args", help="edited arguments as a JSON object")
        p.add_argument(
            "--signal",
            action="store_true",
            help="send the tool_decision signal instead of the update",
        )
        _json_flag(p)
        p.set_defaults(handler=cmd_decide, is_async=True, args=None)

    cancel = sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason")
    _json_flag(cancel)
    cancel.set_defaults(handler=cmd_cancel, is_async=True)

    status = sub.add_parser("status", help="a run's status, pending approvals and usage")
    status.add_argument("run_id")
    _json_flag(status)
    status.set_defaults(handler=cmd_status, is_async=True)

    transcript = sub.add_parser("transcript", help="the messages of a run or a session")
    transcript.add_argument("run_id", nargs="?")
    transcript.add_argument("--session")
    _json_flag(transcript)
    transcript.set_defaults(handler=cmd_transcript, is_async=True)

    ls = sub.add_parser("ls", help="list runs (through Temporal's search attributes)")
    ls.add_argument("--status", help="QUEUED, RUNNING, WAITING_APPROVAL, DONE, FAILED, CANCELED")
    ls.add_argument("--session")
    ls.add_argument("--waiting", action="store_true", help="only runs waiting for approval")
    ls.add_argument("--limit", type=int, default=50)
    _json_flag(ls)
    ls.set_defaults(handler=cmd_ls, is_async=True)

    demo = sub.add_parser(
        "demo", help="bring up the embedded stack and run an example agent task end to end"
    )
    demo.add_argument("--prompt", default=DEMO_PROMPT)
    demo.add_argument("--yes", action="store_true", help="approve for me, do not ask")
    demo.add_argument("--keep-running", action="store_true", help="keep the stack up after")
    demo.add_argument("--exit", action="store_true", help="stop the stack after the run")
    demo.set_defaults(handler=cmd_demo, is_async=True)
