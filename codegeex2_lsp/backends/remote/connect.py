"""Connecting to a completion server: the tokenizer from ``model``, the server's facts, a probe.

Nothing here imports torch or transformers: a remote backend's LSP process needs only the
tokenizer, and only ``tokenizer.model`` is fetched from the hub for it, never the weights.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codegeex2_lsp.backends.generation import SamplingParams, Totals
from codegeex2_lsp.backends.remote.http import (
    API_KEY_VARIABLE,
    Endpoint,
    ServedModel,
    WireClient,
)
from codegeex2_lsp.backends.remote.streaming import RemoteModel
from codegeex2_lsp.backends.tokenizer import TOKENIZER_FILE, ChatGLM2Tokenizer, read_tokenizer
from codegeex2_lsp.errors import LoadError
from codegeex2_lsp.settings.fields import LoadSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """What one short request told about the server, for the load message and ``doctor``."""

    round_trip_seconds: float
    prompts: str
    answers: str | None


def api_key() -> str | None:
    """The API key, from the environment only."""
    return os.environ.get(API_KEY_VARIABLE) or None


def load_tokenizer(model: str, progress: Callable[[str], None] | None = None) -> ChatGLM2Tokenizer:
    """The tokenizer of ``model`` (a directory or hub id), fetching only ``tokenizer.model``."""
    directory = Path(model).expanduser()
    if not directory.is_dir():
        if progress is not None:
            progress(f"Fetching the tokenizer of {model}")
        directory = _download_tokenizer(model).parent
    return read_tokenizer(
        directory,
        "point codegeex2.model at the served model's directory or hub id: the tokenizer "
        "comes from there",
    )


def _download_tokenizer(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, TOKENIZER_FILE))
    except Exception as error:
        raise LoadError(
            f"cannot fetch the tokenizer of {repo_id}: {type(error).__name__}",
            "check codegeex2.model (a hub id or a local directory with tokenizer.model) and "
            "the network, or set HF_HUB_OFFLINE with the file in the hub cache",
        ) from error


def choose_model(models: list[ServedModel], wanted: str, where: str) -> ServedModel:
    """The served model to use: ``wanted``, or the only one when ``wanted`` is empty."""
    names = ", ".join(model.id for model in models) or "none"
    if wanted:
        for model in models:
            if model.id == wanted:
                return model
        raise LoadError(
            f"the completion server at {where} does not serve {wanted!r} (it serves: {names})",
            "set codegeex2.servedModel to one of those, or leave it empty",
        )
    if len(models) == 1:
        return models[0]
    if not models:
        raise LoadError(
            f"the completion server at {where} serves no model",
            "start the server with a CodeGeeX2 model",
        )
    raise LoadError(
        f"the completion server at {where} serves several models: {names}",
        "set codegeex2.servedModel to the CodeGeeX2 one",
    )


def connect(
    tokenizer: ChatGLM2Tokenizer,
    endpoint: Endpoint,
    *,
    served_model: str = "",
    label: str = "openai",
    identity: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[RemoteModel, Probe]:
    """Open ``endpoint``, pick the served model, and check with a one-token completion.

    The probe proves the key, the model name and the prompt form before the first keystroke
    needs them; ``label`` and ``identity`` are :class:`RemoteModel`'s. Raises
    :class:`RemoteError` (a ``LoadError``) when any step fails, after releasing what was
    opened.
    """
    loop = asyncio.new_event_loop()
    client = WireClient(endpoint)
    try:
        models = loop.run_until_complete(client.models())
        served = choose_model(models, served_model, endpoint.display)
        model = RemoteModel(
            tokenizer, client, served, loop=loop, label=label, identity=identity, clock=clock
        )
    except BaseException:
        loop.run_until_complete(client.aclose())
        loop.close()
        raise
    try:
        started = time.perf_counter()
        model.generate(tokenizer.prompt_ids(""), SamplingParams(max_new_tokens=1))
        probe = Probe(time.perf_counter() - started, model.prompt_form, model.answers)
    except BaseException:
        model.close()
        raise
    model.totals = Totals()
    return model, probe


def describe(model: RemoteModel, probe: Probe) -> str:
    """One line for the load message: which model where, and what it takes."""
    context = f", {model.context_tokens} tokens of context" if model.context_tokens else ""
    return (
        f"{model.served.id} at {model.client.endpoint.display} ({model.label}{context}, "
        f"{probe.prompts} prompts, {probe.round_trip_seconds * 1000:.0f} ms round trip)"
    )


def load_openai(
    spec: LoadSpec, progress: Callable[[str], None] | None = None
) -> tuple[RemoteModel, str]:
    """The ``openai`` backend: the tokenizer from ``spec.model``, the server at ``server_url``."""
    report = progress or (lambda message: None)
    tokenizer = load_tokenizer(spec.model, progress)
    endpoint = Endpoint(spec.server_url, api_key=api_key(), timeout=spec.request_timeout_ms / 1000)
    report(f"Connecting to {endpoint.display}")
    model, probe = connect(tokenizer, endpoint, served_model=spec.served_model)
    return model, describe(model, probe)
