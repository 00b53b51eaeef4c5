"""The README is the front door: it must name every setting with its flag and default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codegeex2_lsp.settings.fields import SETTINGS, SettingSpec

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.key)
def test_every_setting_has_a_row_with_its_flag_and_default(spec: SettingSpec) -> None:
    row = re.search(rf"^\| `{spec.key}` \| `{spec.flag}` \|(.*)$", README, re.MULTILINE)
    assert row, f"no settings row for {spec.key}"
    default = spec.default
    if isinstance(default, list):
        # A list's items are each named in the row.
        for item in default:
            assert f"`{item}`" in row.group(1)
        return
    if isinstance(default, bool):
        shown = json.dumps(default)
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default)
    assert f"`{shown}`" in row.group(1)


def test_the_settings_example_lists_every_default() -> None:
    block = README.split("## Settings", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(block) == {spec.key: spec.default for spec in SETTINGS}


def test_the_two_quick_start_commands_are_there() -> None:
    assert "bash scripts/test.sh" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in ci
