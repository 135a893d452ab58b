"""Text PostgreSQL can store: the checks behind the contracts' validators.

PostgreSQL refuses a NUL character and a lone UTF-16 surrogate in TEXT and JSONB, and a model
name longer than its column. A write the database refuses would be retried for ever, so such
text is refused where it enters (with a clear error) or, for text we did not choose and must
keep (a model's reply), replaced.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationInfo

__all__ = [
    "MAX_MODEL_NAME_CHARS",
    "check_text",
    "model_name_problem",
    "nested_text_problem",
    "storable_text",
    "text_problem",
]

MAX_MODEL_NAME_CHARS = 200
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store this text (TEXT or JSONB), or None when it can."""
    if "\x00" in value:
        return f"contains a NUL character (\\x00) at index {value.index(chr(0))}"
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return (
            f"contains a lone surrogate (U+{ord(surrogate.group()):04X}) at index "
            f"{surrogate.start()}"
        )
    return None


def storable_text(value: str) -> str:
    """The text with what PostgreSQL cannot store (NUL, lone surrogates) replaced by U+FFFD:
    for text we did not choose and must keep, such as a model's reply."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return _SURROGATE.sub("\ufffd", value)


def model_name_problem(value: str) -> str | None:
    if len(value) > MAX_MODEL_NAME_CHARS:
        return f"has {len(value)} characters; the limit is {MAX_MODEL_NAME_CHARS}"
    if not value.isprintable():
        return "must be printable (no control, format or line-break characters)"
    return None


def nested_text_problem(value: Any) -> str | None:
    """text_problem of the first string anywhere in a JSON-like value (keys too)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        for k, v in value.items():
            problem = nested_text_problem(k) or nested_text_problem(v)
            if problem:
                return problem
    if isinstance(value, list | tuple):
        for v in value:
            problem = nested_text_problem(v)
            if problem:
                return problem
    return None


def check_text(value: Any, info: ValidationInfo, *, always: bool) -> Any:
    """A field validator's body. `always=False`: not checked when decoded from JSON (a
    Temporal payload), see agentrun.contracts."""
    if value is None or (not always and info.mode == "json"):
        return value
    problem = nested_text_problem(value)
    if problem:
        raise ValueError(f"{info.field_name} {problem}; PostgreSQL cannot store it")
    return value
