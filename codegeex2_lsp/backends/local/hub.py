"""Finding a model: a local directory as it is, a hub id downloaded to the hub's cache.

Only the files the loader reads are fetched, never a repository's Python code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codegeex2_lsp.backends.local.checkpoint import (
    BIN_INDEX,
    CONFIG_FILE,
    SAFETENSORS_INDEX,
    read_config,
)
from codegeex2_lsp.backends.tokenizer import TOKENIZER_FILE
from codegeex2_lsp.errors import LoadError

logger = logging.getLogger(__name__)

# What a hub download fetches: never the repository's Python files.
_HUB_COMMON = [CONFIG_FILE, TOKENIZER_FILE]

_HUB_SAFETENSORS = ["*.safetensors", SAFETENSORS_INDEX]

_HUB_BIN = ["*.bin", BIN_INDEX]


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else the user meant as a directory."""
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or "\\" in model
        or model.count("/") > 1
    )


def resolve_model_dir(model: str, *, progress: Callable[[str], None] | None = None) -> Path:
    """The local directory holding ``model``, downloading it from the hub if it is a repo id.

    Only the files the loader reads are fetched (never the repository's Python code), choosing
    safetensors over ``.bin`` when a repository has both so the weights come down once.
    ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are honoured by ``huggingface_hub``.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        read_config(local)
        return local
    if _looks_like_path(model) or local.exists():
        problem = "is not a directory" if local.exists() else "does not exist"
        raise LoadError(
            f"model directory {model} {problem}",
            "set codegeex2.model to a checkpoint directory or a hub id such as THUDM/codegeex2-6b",
        )
    path = _download(model, progress)
    read_config(path)
    return path


def _download(repo_id: str, progress: Callable[[str], None] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if progress is not None:
        progress(f"Fetching {repo_id}")
    try:
        path = Path(
            snapshot_download(
                repo_id,
                allow_patterns=_hub_patterns(repo_id),
                tqdm_class=_progress_bar(repo_id, progress) if progress is not None else None,
            )
        )
    except GatedRepoError as exc:
        raise LoadError(
            f"access to {repo_id} is restricted",
            "accept its terms on the hub and log in with `hf auth login`",
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise LoadError(
            f"no local directory or hub repository named {repo_id}",
            "check the spelling of codegeex2.model, for example THUDM/codegeex2-6b",
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise LoadError(
            f"{repo_id} is not in the local hub cache and cannot be downloaded now "
            "(HF_HUB_OFFLINE is set or the hub is unreachable)",
            "download it once with network access, or point codegeex2.model at a local directory",
        ) from exc
    except Exception as exc:
        # Network failures surface as the HTTP client's own exception types.
        raise LoadError(
            f"could not download {repo_id}: {exc}",
            "check the network connection or proxy (HF_ENDPOINT for a mirror), or point "
            "codegeex2.model at a local directory",
        ) from exc
    if progress is not None:
        progress(f"Fetched {repo_id}")
    return path


def _progress_bar(repo_id: str, progress: Callable[[str], None]) -> type[Any]:
    """A tqdm class for the hub's download bars that reports to ``progress`` instead of a
    terminal, at most once a second, as "Downloading REPO: 1.2 of 12.5 GB (10%)"."""
    import io
    import time

    from tqdm.auto import tqdm

    class Reporter(tqdm):
        _last = 0.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            if self.unit != "B" or not self.total or now - Reporter._last < 1.0:
                return
            Reporter._last = now
            done, total = self.n / 1e9, self.total / 1e9
            progress(
                f"Downloading {repo_id}: {done:.1f} of {total:.1f} GB "
                f"({int(100 * self.n / self.total)}%)"
            )

    return Reporter


def _hub_patterns(repo_id: str) -> list[str]:
    """The files to fetch: one weight format only, if the repository's listing can be read."""
    from huggingface_hub import constants, list_repo_files
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    every_format = [*_HUB_COMMON, *_HUB_SAFETENSORS, *_HUB_BIN]
    if constants.is_offline_mode():
        return every_format
    try:
        files = list_repo_files(repo_id)
    except (RepositoryNotFoundError, HFValidationError):
        raise
    except Exception as exc:
        # Unreachable hub: the download step falls back to the local cache.
        logger.warning("cannot list %s (%s); trying the local cache", repo_id, exc)
        return every_format
    has_safetensors = any(name.endswith(".safetensors") for name in files)
    return [*_HUB_COMMON, *(_HUB_SAFETENSORS if has_safetensors else _HUB_BIN)]
