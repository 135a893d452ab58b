"""The `agentrun` command line: the arguments of every command, and how a command's outcome
becomes output and an exit code (starter.exits). Commands live in starter.commands and
starter.stack_cmd and are imported only when they run, so help and usage errors answer fast."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from agentrun.process import exit_process
from agentrun.protocol.queue import IfBusy
from agentrun.protocol.statuses import ApprovalPreset, Scope
from starter.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, CliError

__all__ = ["CliError", "build_parser", "main"]

APPROVAL_PRESETS = [p.value for p in ApprovalPreset]
IF_BUSY = [p.value for p in IfBusy]
IF_BUSY_HELP = (
    "if the session has an active run: reject (default, unless the session has one), "
    "enqueue (start after it), interrupt (stop it, keep its partial answer), rollback (stop "
    "it and leave it out of the conversation)"
)
SCOPES = [s.value for s in Scope]
DEFAULT_DEMO_PROMPT = (
    "List the files in the workspace, work out 17 * 23 with the calculator, "
    "then run `wc -l notes.txt`."
)


def _command(p: argparse.ArgumentParser, handler: str) -> None:
    """`handler` is "module:function" (a coroutine function or a plain one). Every command
    takes --json (README, CLI reference)."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    # The command's own parser reports arguments it does not know (with its own usage).
    p.set_defaults(handler=handler, command_parser=p)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _dev_command(sub: Any) -> None:
    dev = sub.add_parser(
        "dev",
        help="start Temporal, PostgreSQL, a worker and the HTTP API with the web page on this "
        "machine (Ctrl-C stops)",
    )
    dev.add_argument("--no-worker", action="store_true", help="start the servers only")
    dev.add_argument("--no-api", action="store_true", help="do not start the HTTP API")
    _command(dev, "starter.stack_cmd:cmd_dev")


def _demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="bring up the embedded stack and run an example agent task end to end"
    )
    demo.add_argument("--prompt", default=DEFAULT_DEMO_PROMPT)
    demo.add_argument("--yes", action="store_true", help="approve for me, do not ask")
    demo.add_argument("--keep-running", action="store_true", help="keep the stack up after")
    demo.add_argument("--exit", action="store_true", help="stop the stack after the run")
    _command(demo, "starter.stack_cmd:cmd_demo")


def _admin_commands(sub: Any) -> None:
    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for action, helptext in (
        ("upgrade", "migrate the database to the newest schema"),
        ("current", "print the database's schema revision"),
    ):
        _command(db_sub.add_parser(action, help=helptext), "starter.commands.admin:cmd_db")

    worker = sub.add_parser("worker", help="run a worker (same as agentrun-worker)")
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes on this machine, started and stopped together (default 1)",
    )
    _command(worker, "starter.commands.admin:cmd_worker")

    codec = sub.add_parser(
        "codec-server",
        help="serve /encode and /decode for the Temporal Web UI and CLI (encrypted payloads)",
    )
    codec.add_argument("--host", help="override AGENTRUN_CODEC_SERVER_HOST (default 127.0.0.1)")
    codec.add_argument("--port", type=int, help="override AGENTRUN_CODEC_SERVER_PORT (8081)")
    _command(codec, "starter.commands.admin:cmd_codec_server")

    serve = sub.add_parser("serve", help="serve the HTTP API and the web page (README: HTTP API)")
    serve.add_argument("--host", help="override AGENTRUN_HTTP_HOST (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="override AGENTRUN_HTTP_PORT (8780)")
    _command(serve, "starter.commands.serve:cmd_serve")


def _follow_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="start a run and follow it live")
    run.add_argument("prompt", nargs="?", help="the prompt; - reads it from stdin")
    run.add_argument("--prompt-file", metavar="PATH", help="read the prompt from this file")
    run.add_argument("--session", help="session id; runs in one session share a conversation")
    run.add_argument("--run-id", help="run id; starting the same id again returns that run")
    run.add_argument("--model", help="model for this run (default: the worker's AGENTRUN_MODEL)")
    run.add_argument("--tools", help="comma-separated built-in tool names; '' for none")
    run.add_argument(
        "--approval",
        choices=APPROVAL_PRESETS,
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
    run.add_argument("--if-busy", choices=IF_BUSY, help=IF_BUSY_HELP)
    _command(run, "starter.commands.runs:cmd_run")

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
    _command(follow, "starter.commands.runs:cmd_follow")


def _decision_commands(sub: Any) -> None:
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
        p.set_defaults(args=None)
        _command(p, "starter.commands.decisions:cmd_decide")

    cancel = sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason")
    _command(cancel, "starter.commands.decisions:cmd_cancel")


def _read_commands(sub: Any) -> None:
    status = sub.add_parser("status", help="a run's status, pending approvals and usage")
    status.add_argument("run_id")
    _command(status, "starter.commands.runs:cmd_status")

    transcript = sub.add_parser("transcript", help="the messages of a run or a session")
    transcript.add_argument("run_id", nargs="?")
    transcript.add_argument("--session")
    _command(transcript, "starter.commands.runs:cmd_transcript")

    ls = sub.add_parser("ls", help="list runs (through Temporal's search attributes)")
    ls.add_argument("--status", help="QUEUED, RUNNING, WAITING_APPROVAL, DONE, FAILED, CANCELED")
    ls.add_argument("--session")
    ls.add_argument("--waiting", action="store_true", help="only runs waiting for approval")
    ls.add_argument("--limit", type=_at_least_one, default=50, help="at most this many (50)")
    _command(ls, "starter.commands.runs:cmd_ls")

    tools = sub.add_parser("tools", help="built-in and MCP tools with their approval policies")
    check = tools.add_subparsers(dest="tools_command").add_parser(
        "check", help="connect to each declared MCP server: what it offers or why it failed"
    )
    _command(tools, "starter.commands.tools:cmd_tools")
    _command(check, "starter.commands.tools:cmd_tools_check")


def _queue_commands(sub: Any) -> None:
    queue = sub.add_parser("queue", help="a session's queued messages and its --if-busy default")
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="the messages waiting, in the order they will start")
    ls.add_argument("session")
    ls.add_argument("--all", action="store_true", help="every message it queued, in any state")
    cancel = actions.add_parser("cancel", help="withdraw a waiting message (its run never starts)")
    cancel.add_argument("message_id")
    policy = actions.add_parser("policy", help="show or set the session's default --if-busy")
    policy.add_argument("session")
    policy.add_argument("policy", nargs="?", choices=[*IF_BUSY, "none"])
    for p in (ls, cancel, policy):
        _command(p, "starter.commands.queue:cmd_queue")


def _webhook_commands(sub: Any) -> None:
    hooks = sub.add_parser(
        "webhooks", help="webhooks out: URLs told when a call needs approval or a run ends"
    )
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    handler = "starter.commands.webhooks:cmd_webhooks"
    tenant_help = "the tenant (default: default, the tenant of runs started without one)"
    ls = actions.add_parser("list", help="the webhooks that are registered")
    ls.add_argument("--tenant", help="only this tenant's")
    _command(ls, handler)
    add = actions.add_parser("add", help="register a URL for events (prints the secret once)")
    add.add_argument("url", help="http(s) URL that receives a signed POST per event")
    add.add_argument("--tenant", help=tenant_help)
    add.add_argument(
        "--event",
        dest="events",
        action="append",
        required=True,
        metavar="EVENT",
        help="tool.approval_requested or run.finished (repeat for both)",
    )
    _command(add, handler)
    rm = actions.add_parser("remove", help="stop sending to a webhook")
    rm.add_argument("webhook_id")
    rm.add_argument("--tenant", help="refuse unless the webhook is this tenant's")
    _command(rm, handler)
    dl = actions.add_parser("deliveries", help="recent deliveries: attempts and final state")
    dl.add_argument("--tenant")
    dl.add_argument("--run", help="only this run's")
    dl.add_argument("--limit", type=_at_least_one, default=20, help="at most this many (20)")
    _command(dl, handler)
    secret = actions.add_parser("secret", help="make the tenant's signing secret (shown once)")
    secret.add_argument("--tenant", help=tenant_help)
    secret.add_argument("--rotate", action="store_true", help="replace it with a new one")
    _command(secret, handler)


def _keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="HTTP API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create", help="create a key and print its token once (only a hash is kept)"
    )
    create.add_argument(
        "--tenant",
        default="default",
        help="the key's tenant: it sees only that tenant's runs and sessions (default: "
        "`default`, the tenant of runs started by this CLI)",
    )
    create.add_argument("--name", required=True, help="a name for the key, unique per tenant")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="read (list, get, follow), write (start, cancel, submit results), approve "
        "(decide tool calls); repeat for several (default: all three)",
    )
    _command(create, "starter.commands.keys:cmd_keys_create")
    ls = keys_sub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--tenant", help="only this tenant's keys")
    _command(ls, "starter.commands.keys:cmd_keys_list")
    revoke = keys_sub.add_parser("revoke", help="revoke a key: refused from the next request on")
    revoke.add_argument("key", metavar="KEY_ID_OR_NAME")
    revoke.add_argument("--tenant", help="the tenant of the key named")
    _command(revoke, "starter.commands.keys:cmd_keys_revoke")


def _cost_commands(sub: Any) -> None:
    usage = sub.add_parser("usage", help="tokens and cost from the ledger, by model, day, ...")
    usage.add_argument("--session", help="only this session's runs")
    usage.add_argument("--since", help="only calls since: 7d, 24h, 30m, 2w or an ISO time")
    usage.add_argument(
        "--by", choices=["model", "day", "session", "run"], default="model", help="(model)"
    )
    _command(usage, "starter.commands.usage:cmd_usage")
    budget = sub.add_parser("budget", help="show or set a session's budget")
    budget.add_argument("session_id")
    budget.add_argument("--max-cost-usd", metavar="USD", help="e.g. 2.50 (exact)")
    budget.add_argument("--max-total-tokens", type=_at_least_one, metavar="N")
    budget.add_argument("--clear", action="store_true", help="remove the session's budget")
    _command(budget, "starter.commands.usage:cmd_budget")


def _sessions_commands(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="sessions: delete one (forget its conversation)")
    actions = sessions.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    delete = actions.add_parser("delete", help="erase a session's text; usage stays (README)")
    delete.add_argument("session_id")
    delete.add_argument("--cancel-active", action="store_true", help="cancel its running run first")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _command(delete, "starter.commands.sessions:cmd_sessions_delete")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Durable LLM agent runs on Temporal, recorded in Postgres.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order of `agentrun --help`.
    for add in (
        _dev_command,
        _admin_commands,
        _follow_commands,
        _decision_commands,
        _read_commands,
        _queue_commands,
        _webhook_commands,
        _keys_commands,
        _cost_commands,
        _sessions_commands,
        _demo_command,
    ):
        add(sub)
    return parser


def _resolve(handler: str) -> Callable[[argparse.Namespace], Any]:
    module, _, name = handler.partition(":")
    fn: Callable[[argparse.Namespace], Any] = getattr(importlib.import_module(module), name)
    return fn


def one_line(message: str) -> str:
    """`message` on one line: a multi-line message (a child's output, a list of commands) is
    joined with "; " unless a line already ends in punctuation."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    out = lines[0] if lines else ""
    for line in lines[1:]:
        out += (" " if out.endswith((":", ";", ",", ".", "(")) else "; ") + line
    return out


def _print_error(message: str) -> None:
    from rich.console import Console

    # soft_wrap: never break the line at the console's width (80 when stderr is not a terminal,
    # or COLUMNS): a script reads one error per line.
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"agentrun: {one_line(message)}", style="red", markup=False
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    own: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    if unknown:
        own.error(f"unrecognized arguments: {' '.join(unknown)}")
    if own.prog.endswith(" run") and args.prompt is None and args.prompt_file is None:
        # Answered here, before the command's heavy imports (bench/cli_startup.py).
        _print_error("give a prompt: PROMPT, `-` for stdin, or --prompt-file PATH")
        exit_process(EXIT_USAGE)
    try:
        handler = _resolve(args.handler)
        if inspect.iscoroutinefunction(handler):
            code = asyncio.run(handler(args))
        else:
            code = handler(args)
    except CliError as exc:
        _print_error(str(exc))
        code = exc.code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception as exc:  # one line, never a traceback
        from agentrun.mcp.config import McpConfigError
        from agentrun.stack import StackError

        if isinstance(exc, StackError):
            _print_error(str(exc))
            code = EXIT_UNREACHABLE
        elif isinstance(exc, McpConfigError):  # a worker's MCP declarations (dev, demo)
            _print_error(str(exc))
            code = EXIT_USAGE
        else:
            _print_error(f"unexpected error: {type(exc).__name__}: {exc}")
            code = EXIT_FAILED
    exit_process(code)


if __name__ == "__main__":
    main()
