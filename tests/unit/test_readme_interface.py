"""README.md's "Public interface" tables are rendered from agentrun/protocol: they cannot drift."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import pytest

from agentrun.protocol import docs
from agentrun.protocol.events import EventType
from agentrun.protocol.names import WORKFLOW_NAME, Query, SearchAttribute, Signal, Update

README = Path(__file__).resolve().parents[2] / "README.md"


def _interface_section() -> str:
    text = README.read_text()
    start = text.index("## Public interface")
    following = re.search(r"^## ", text[start + 1 :], re.M)
    return text[start : start + 1 + following.start()] if following else text[start:]


@pytest.mark.parametrize("name", sorted(docs.BLOCKS))
def test_readme_block_is_what_the_protocol_renders(name: str) -> None:
    blocks = docs.readme_blocks(_interface_section())
    assert name in blocks, (
        f"README.md's Public interface section lacks the generated block {name!r} "
        f"(<!-- {name}:begin --> ... <!-- {name}:end -->); add the markers and run "
        f"`{docs.COMMAND}`"
    )
    assert blocks[name] == docs.BLOCKS[name]().strip(), (
        f"README.md's {name!r} table differs from agentrun/protocol; run `{docs.COMMAND}` "
        "and commit README.md"
    )


def test_rendering_a_current_readme_changes_nothing() -> None:
    text = README.read_text()
    assert docs.render_readme(text) == text, f"README.md is out of date; run `{docs.COMMAND}`"


@pytest.mark.parametrize(
    "names",
    [EventType, Update, Signal, Query, SearchAttribute],
    ids=lambda e: e.__name__,
)
def test_every_name_appears_in_the_interface_section(names: type[enum.StrEnum]) -> None:
    section = _interface_section()
    missing = [m.value for m in names if f"`{m.value}`" not in section]
    assert not missing, f"README.md's Public interface section does not mention {missing}"


def test_the_workflow_name_appears_in_the_interface_section() -> None:
    assert f"`{WORKFLOW_NAME}`" in _interface_section()


def test_the_message_table_covers_every_update_signal_and_query() -> None:
    listed = {(type(m.name), m.name) for m in docs.MESSAGES}
    every = {(type(member), member) for kind in (Update, Signal, Query) for member in kind}
    assert listed == every
    assert len(docs.MESSAGES) == len(every), "each name once"


def test_a_stale_block_is_rewritten_and_other_text_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    stale = "".join(f"<!-- {n}:begin note -->\nstale\n<!-- {n}:end -->\n" for n in docs.BLOCKS)
    readme.write_text(
        f"# title\n\n{stale}<!-- other:begin -->\nkept\n<!-- other:end -->\n\nafter\n"
    )
    assert docs.main([str(readme), "--check"]) == 1
    assert docs.main([str(readme)]) == 0
    text = readme.read_text()
    assert docs.main([str(readme), "--check"]) == 0
    assert "stale" not in text
    assert "kept" in text
    assert text.startswith("# title\n\n<!-- ")
    assert text.endswith("after\n")
    assert docs.readme_blocks(text)["events"] == docs.BLOCKS["events"]()


def test_the_message_table_is_what_the_workflow_handles() -> None:
    """Names, payload and answer types of the README's table against the workflow's own
    update, signal and query handlers (read from the class; no worker, no server)."""
    from temporalio import workflow

    from workflows.agent import AgentRunWorkflow

    definition = workflow._Definition.must_from_class(AgentRunWorkflow)
    handlers: dict[tuple[type, str | None], tuple[list[Any], Any]] = {
        **{(Update, n): (d.arg_types or [], d.ret_type) for n, d in definition.updates.items()},
        **{(Signal, n): (d.arg_types or [], None) for n, d in definition.signals.items()},
        **{(Query, n): (d.arg_types or [], d.ret_type) for n, d in definition.queries.items()},
    }
    handled = {key for key in handlers if key[1] is not None}
    assert handled == {(type(m.name), m.name.value) for m in docs.MESSAGES}
    for m in docs.MESSAGES:
        arg_types, ret_type = handlers[(type(m.name), m.name.value)]
        assert arg_types == ([m.payload] if m.payload else []), m.name
        if isinstance(m.answer, type):
            assert ret_type is m.answer, m.name
        elif isinstance(m.answer, str):
            assert ret_type is str, m.name
