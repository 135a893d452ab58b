"""Your own tool on an agentrun worker: a pydantic argument model (its JSON schema is what the
model sees), a function, and a registration with its approval policy.

`save_note` appends a line to notes.md in the run's workspace. It changes a file, so it asks a
person before it runs (NEEDS_APPROVAL); `agentrun run --yes` or an approval answers. Tools run
at least once: a worker lost mid-call runs the call again, so the function uses the call's
idempotency key to append each note once.

Run a worker that offers it, and a run that may use it:

    python examples/custom_tool.py                 # a worker: the built-ins + save_note
    agentrun run "note that the demo worked" --tools save_note,read_file

(the offline model calls only the built-ins by itself; with a real model configured on the
worker, or a scripted offline reply as in tests/test_cli_errors.py, the run calls save_note).
"""

from __future__ import annotations

import asyncio
import signal

from pydantic import BaseModel, ConfigDict, Field

from activities.tools import Tool, ToolContext, ToolError, ToolRegistry, confine, default_registry
from agentrun.contracts import ToolApproval
from agentrun.settings import load_settings


class SaveNoteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field the model invents is an error result
    text: str = Field(min_length=1, max_length=500, description="The note, one line.")
    file: str = Field(default="notes.md", description="File inside the workspace.")


def save_note(args: SaveNoteArgs, ctx: ToolContext) -> str:
    """Append `text` to the file once per tool call (a re-run finds its marker and stops)."""
    if "\n" in args.text:
        raise ToolError("a note is one line")  # the model sees this as an error result
    path = confine(ctx.workspace, args.file)  # paths leading out of the workspace are refused
    marker = f"<!-- {ctx.idempotency_key} -->"
    existing = path.read_text() if path.exists() else ""
    if marker not in existing:
        with path.open("a") as f:
            f.write(f"- {args.text} {marker}\n")
    return f"saved to {args.file}"


SAVE_NOTE = Tool(
    "save_note",
    "Append a one-line note to a file in the workspace.",
    SaveNoteArgs,
    save_note,
    approval=ToolApproval.NEEDS_APPROVAL,  # ToolApproval.AUTO: runs without asking
    timeout_s=10,
    max_attempts=3,
)


def registry() -> ToolRegistry:
    """The built-in tools and save_note: pass it to build_worker(registry=...) or
    run_worker(registry=...)."""
    tools = default_registry()
    tools.register(SAVE_NOTE)
    return tools


async def main() -> None:
    from worker import run_worker

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await run_worker(load_settings(), stop, registry=registry())


if __name__ == "__main__":
    asyncio.run(main())
