"""``codegeex2-lsp doctor`` for a completion server: is it there, what does it serve, and how fast.

Each step says what it found, and the first that fails says what to check; nothing here loads
torch, so the check runs where the editor runs.
"""

from __future__ import annotations

import asyncio
import time

from codegeex2_lsp.backends.generation import SamplingParams
from codegeex2_lsp.backends.remote.connect import api_key, choose_model, connect, load_tokenizer
from codegeex2_lsp.backends.remote.http import Endpoint, WireClient
from codegeex2_lsp.errors import Diagnosis, LoadError
from codegeex2_lsp.settings.fields import API_KEY_VARIABLE, Settings

ROUND_TRIPS = 5
"""One-token requests timed for the round trip; the median is shown."""


def diagnose_remote(settings: Settings) -> Diagnosis:
    """Check the server that ``settings`` point at, step by step."""
    out = Diagnosis()
    key = api_key()
    endpoint = Endpoint(
        settings.server_url, api_key=key, timeout=settings.request_timeout_ms / 1000
    )
    out.lines.append(f"backend: {settings.backend}, server {endpoint.display}")
    out.lines.append(f"API key: {'set' if key else 'not set'} ({API_KEY_VARIABLE})")
    try:
        tokenizer = load_tokenizer(settings.model)
    except LoadError as error:
        return out.fail(error)
    out.lines.append(f"tokenizer: {settings.model} ({tokenizer.piece_count} pieces)")

    loop = asyncio.new_event_loop()
    client = WireClient(endpoint)
    try:
        started = time.perf_counter()
        models = loop.run_until_complete(client.models())
        listed = (time.perf_counter() - started) * 1000
    except LoadError as error:
        return out.fail(error)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
    out.lines.append(f"reachable: yes (model list in {listed:.0f} ms)")
    for served in models:
        context = served.max_model_len or "not reported"
        out.lines.append(f"  serves {served.id}: context {context}")
    try:
        chosen = choose_model(models, settings.served_model, endpoint.display)
        model, probe = connect(tokenizer, endpoint, served_model=chosen.id)
    except LoadError as error:
        return out.fail(error)
    try:
        if model.context_tokens is not None and model.context_tokens < settings.max_context_tokens:
            out.lines.append(
                f"context: maxContextTokens {settings.max_context_tokens} is capped to the "
                f"server's {model.context_tokens}"
            )
        out.lines.append(
            f"prompts: {'token ids' if probe.prompts == 'ids' else 'text (token ids refused)'}; "
            f"answers: {'token ids' if probe.answers == 'ids' else 'text'}"
        )
        times = []
        prompt = tokenizer.prompt_ids("def hello():\n")
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            model.generate(prompt, SamplingParams(max_new_tokens=1))
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out.lines.append(
            f"round trip (one token): median {times[len(times) // 2]:.0f} ms, "
            f"best {times[0]:.0f} ms over {ROUND_TRIPS}"
        )
    except LoadError as error:
        return out.fail(error)
    finally:
        model.close()
    return out
