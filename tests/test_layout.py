"""The package's layout shows its layers: few top-level modules and no two modules of one name."""

from collections import Counter
from pathlib import Path

import codegeex2_lsp

PACKAGE = Path(codegeex2_lsp.__file__).parent


def test_few_modules_sit_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_no_two_modules_share_a_file_name() -> None:
    names = Counter(p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_each_layer_is_a_package() -> None:
    layers = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"lsp", "completion", "postprocess", "backends", "settings", "testing"} <= layers
