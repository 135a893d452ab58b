"""Every setting the code reads is in the README's settings table, so the two cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from agentrun.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _variables() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.add(str(choices[0]))
    return names


def test_every_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = sorted(_variables() - documented)
    assert not missing, f"settings missing from the README's Settings table: {missing}"
