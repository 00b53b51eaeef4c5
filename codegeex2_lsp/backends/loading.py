"""Where a model comes from: the load settings pick a backend, whose module is imported only then.

A backend's module may pull in heavy libraries (the local one imports torch and transformers);
importing it lazily keeps them out of a process that uses another backend.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from codegeex2_lsp.backends.generation import CompletionModel
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import LoadSpec


def load_backend(
    spec: LoadSpec, progress: Callable[[str], None] | None = None
) -> tuple[CompletionModel, str]:
    """The model ``spec`` names and a description of it; raises ``LoadError`` when it cannot be had.

    ``progress`` hears each slow step, for the editor's progress report; without it (the command
    line) a backend may show its own progress on the terminal.
    """
    if spec.backend == "local":
        from codegeex2_lsp.backends.local.loader import load_local

        return load_local(spec, progress)
    if spec.backend == "openai":
        from codegeex2_lsp.backends.remote.connect import load_openai

        return load_openai(spec, progress)
    if spec.backend == "shared":
        from codegeex2_lsp.backends.shared.client import load_shared

        return load_shared(spec, progress)
    raise LoadError(
        f"the {spec.backend} backend is not part of this version", 'set "backend" to "local"'
    )


def release_memory() -> None:
    """Return the memory of a model no longer referenced, before the next one loads.

    Device memory is torch's to give back, and only a process that imported torch holds any.
    """
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
