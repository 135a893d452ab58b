"""The house rules of issue 10's "Done when", checked on the source tree (no server, no import
of the modules checked):

- no .py file outside tests/ over 450 lines;
- no function or method outside tests/ over 80 lines (`def` line to last line, decorators not
  counted), released Alembic migrations excepted: they are history, like tests/histories;
- no event-type string literal anywhere (tests included) but in agentrun/protocol/event_base.py: a
  dotted type ("message.delta", "tool.decided", ...) as any string constant; the type "error",
  which is also an ordinary word and status, only where it is used as an event type: compared
  with, or matched against, something named `type` (`event.type == "error"`, `type_ in (...)`,
  `row["type"]`, `case "error":`), passed as `type=`/`event_type=`, passed positionally to a
  function whose name says event (`append_event(run_id, "error", ...)`), or as the value of a
  dict's "type" key.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from agentrun.protocol.events import EventType

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
EVENTS_MODULE = ROOT / "agentrun" / "protocol" / "event_base.py"
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "__pycache__",
    ".agentrun",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
}
DOTTED_TYPES = frozenset(t.value for t in EventType if "." in t.value)
PLAIN_TYPES = frozenset(t.value for t in EventType if "." not in t.value)
TYPE_NAMES = frozenset({"type", "type_", "event_type", "etype"})
MIGRATIONS = ROOT / "agentrun" / "db" / "migrations" / "versions"


def python_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        found.append(path)
    return sorted(found)


def _in_tests(path: Path) -> bool:
    return path.relative_to(ROOT).parts[0] == "tests"


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def long_files() -> list[str]:
    out = []
    for path in python_files():
        lines = len(path.read_text().splitlines())
        if not _in_tests(path) and lines > MAX_FILE_LINES:
            out.append(f"{_name(path)}: {lines} lines")
    return out


def long_functions_in(source: str) -> Iterator[tuple[int, str, int]]:
    """(line, qualified name, length) of every function over MAX_FUNCTION_LINES."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[int, str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        yield child.lineno, qualified, length
                yield from walk(child, f"{qualified}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source), "")


def long_functions() -> list[str]:
    out = []
    for path in python_files():
        if _in_tests(path) or path.is_relative_to(MIGRATIONS):
            continue
        for line, name, length in long_functions_in(path.read_text()):
            out.append(f"{_name(path)}:{line}: {name} has {length} lines")
    return out


def _string(node: ast.AST | None) -> ast.Constant | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node
    return None


def _constant(node: ast.AST | None) -> str | None:
    string = _string(node)
    return str(string.value) if string is not None else None


def _type_like(node: ast.AST) -> bool:
    """An expression that names an event type: `type`, `x.type`, `x["type"]`, `x.get("type")`."""
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in TYPE_NAMES
    if isinstance(node, ast.Subscript):
        return _constant(node.slice) in TYPE_NAMES
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and bool(node.args) and _constant(node.args[0]) in TYPE_NAMES
    return False


def _values(node: ast.AST) -> list[ast.AST]:
    """The node, or the items of a literal tuple, list or set."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return list(node.elts)
    return [node]


def _call_name(node: ast.Call) -> str:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return ""


def _pattern_values(pattern: ast.pattern) -> Iterator[ast.AST]:
    if isinstance(pattern, ast.MatchValue):
        yield pattern.value
    elif isinstance(pattern, ast.MatchOr):
        for p in pattern.patterns:
            yield from _pattern_values(p)


def _plain_type_uses(node: ast.AST) -> Iterator[ast.AST]:
    """The constants in `node` that are used as an event type (for types that are words)."""
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        if any(_type_like(o) for o in operands):
            yield from (v for o in operands for v in _values(o))
    elif isinstance(node, ast.Call):
        if "event" in _call_name(node).lower():
            yield from node.args
        yield from (k.value for k in node.keywords if k.arg in TYPE_NAMES)
    elif isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        yield from (v for k, v in pairs if _constant(k) in TYPE_NAMES)
    elif isinstance(node, ast.Match) and _type_like(node.subject):
        for case in node.cases:
            yield from _pattern_values(case.pattern)


def event_type_literals_in(source: str) -> list[tuple[int, str]]:
    """(line, value) of every event-type literal in the source, in line order."""
    return sorted(_event_type_literals(source))


def _event_type_literals(source: str) -> Iterator[tuple[int, str]]:
    seen: set[tuple[int, int]] = set()
    for node in ast.walk(ast.parse(source)):
        candidates = [(_string(node), DOTTED_TYPES)]
        candidates += [(_string(use), PLAIN_TYPES) for use in _plain_type_uses(node)]
        for const, event_types in candidates:
            if const is None or const.value not in event_types:
                continue
            if (const.lineno, const.col_offset) not in seen:
                seen.add((const.lineno, const.col_offset))
                yield const.lineno, const.value


def event_type_literals() -> list[str]:
    out = []
    for path in python_files():
        if path == EVENTS_MODULE:
            continue
        for line, value in event_type_literals_in(path.read_text()):
            out.append(f"{_name(path)}:{line}: {value!r}")
    return out


# -- the rules -----------------------------------------------------------------------------------


def test_no_python_file_outside_tests_is_over_450_lines() -> None:
    found = long_files()
    assert not found, f"{len(found)} file(s) over {MAX_FILE_LINES} lines:\n" + "\n".join(found)


def test_no_function_outside_tests_is_over_80_lines() -> None:
    found = long_functions()
    assert not found, f"{len(found)} function(s) over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        found
    )


def test_event_types_are_written_only_in_the_events_module() -> None:
    found = event_type_literals()
    assert not found, (
        f"{len(found)} event-type literal(s) outside agentrun/protocol/event_base.py (the "
        "EventType enum); use "
        "agentrun.protocol.events.EventType:\n" + "\n".join(found)
    )


# -- the checks themselves -----------------------------------------------------------------------


def test_the_tree_walk_sees_the_project_and_skips_environments() -> None:
    names = {_name(p) for p in python_files()}
    assert {"worker.py", "agentrun/protocol/events.py", "tests/unit/test_layout.py"} <= names
    assert not any(n.startswith((".venv/", "build/")) or ".egg-info/" in n for n in names)


def test_a_long_function_is_found_with_its_class() -> None:
    body = "\n".join(f"        x = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class C:\n    def ok(self):\n        pass\n\n    async def big(self):\n{body}\n"
    assert list(long_functions_in(source)) == [(5, "C.big", MAX_FUNCTION_LINES + 1)]
    shorter = "\n".join(line[4:] for line in body.splitlines()[:-1])  # exactly the limit
    assert list(long_functions_in(f"def f():\n{shorter}\n")) == []


def test_event_type_literals_are_found_and_ordinary_words_are_not() -> None:
    delta, error = EventType.MESSAGE_DELTA.value, EventType.ERROR.value
    flagged = f"""
x = "{delta}"
if event.type == "{error}": pass
if type_ in ("{error}", "other"): pass
repo.append_event(run_id, "{error}", {{}})
AppendEventInput(run_id=r, type="{error}")
d = {{"type": "{error}", "data": {{}}}}
match row["type"]:
    case "{error}" | "other": pass
"""
    assert [line for line, _ in event_type_literals_in(flagged)] == [2, 3, 4, 5, 6, 7, 9]
    ordinary = f"""
status = "{error}"
record_llm_call(status="{error}")
body = {{"{error}": message}}
if call.status == "{error}": pass
log_level = "{error}"
text = "the {delta} events"
x = EventType.MESSAGE_DELTA
"""
    assert event_type_literals_in(ordinary) == []
