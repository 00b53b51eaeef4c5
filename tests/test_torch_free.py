"""The LSP side imports no backend: a process serving a remote backend never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers")

LSP_SIDE = (
    "codegeex2_lsp.lsp.server",
    "codegeex2_lsp.completion.pipeline",
    "codegeex2_lsp.context.index",
    "codegeex2_lsp.context.select",
    "codegeex2_lsp.cli",
    "codegeex2_lsp.backends.worker",
    "codegeex2_lsp.backends.loading",
    "codegeex2_lsp.backends.generation",
    "codegeex2_lsp.backends.tokenizer",
    "codegeex2_lsp.backends.shared.launcher",
    "codegeex2_lsp.backends.shared.client",
)


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_the_lsp_side_imports_no_torch() -> None:
    assert imported_after("\n".join(f"import {name}" for name in LSP_SIDE)) == []


def test_a_server_with_its_engine_running_imports_no_torch() -> None:
    code = (
        "from codegeex2_lsp.lsp.server import create_server\n"
        "server = create_server()\n"
        "assert server.engine.state == 'idle'\n"
        "server.engine.close()"
    )
    assert imported_after(code) == []


def test_the_probe_sees_torch_when_it_is_imported() -> None:
    assert imported_after("import codegeex2_lsp.backends.local.inference") == list(HEAVY)


def test_loading_another_backend_imports_no_torch() -> None:
    code = (
        "import threading\n"
        "from codegeex2_lsp.settings.fields import Settings\n"
        "from codegeex2_lsp.backends.worker import Engine, LoadListener\n"
        "done = threading.Event()\n"
        "engine = Engine()\n"
        "engine.load(Settings(backend='openai').load_spec(),"
        " LoadListener(on_ready=lambda d: done.set(), on_failed=lambda m, h: done.set()))\n"
        "assert done.wait(60)\n"
        "engine.close()"
    )
    assert imported_after(code) == []
