"""The JSON of the completions API: requests checked into a typed call, answers in vLLM's shape.

Field names and defaults are vLLM's, so one client speaks to both servers: ``prompt`` as token
ids (or text), ``return_token_ids`` to get the ids of the generated tokens in every choice,
``logit_bias`` at -100 to keep ids out, ``stream`` for server-sent events. A window's document
is named by ``user`` (the editor process) and ``vllm_xargs.document`` (its URI), vLLM's fields
for a caller's identity and for extensions.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUPPRESS_BIAS = -100.0
"""A ``logit_bias`` this low (OpenAI's minimum) keeps a token out entirely."""


class BadRequest(ValueError):
    """A request this server cannot serve; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class CompletionCall:
    """One ``POST /v1/completions``, checked."""

    prompt: list[int] | str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False
    suppressed: frozenset[int] = frozenset()
    stop_token_ids: frozenset[int] = frozenset()
    client: str = ""
    document: str = ""


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a number", name)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer", name)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}", name)
    return value


def _prompt(value: Any) -> list[int] | str:
    # vLLM takes a batch of one prompt too: one level of nesting, never more.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list | str):
        value = value[0]
    if isinstance(value, str) and value:
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    ):
        return list(value)
    raise BadRequest("prompt must be one non-empty string or list of token ids", "prompt")


def _ids(value: Any, name: str) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise BadRequest(f"{name} must be a list of token ids", name)
    return frozenset(value)


def _suppressed(value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, Mapping):
        raise BadRequest("logit_bias must map token ids to biases", "logit_bias")
    ids = set()
    for key, bias in value.items():
        if not str(key).isdigit() or isinstance(bias, bool) or not isinstance(bias, int | float):
            raise BadRequest("logit_bias must map token ids to biases", "logit_bias")
        if bias > SUPPRESS_BIAS:
            raise BadRequest(
                "only a logit_bias of -100, keeping a token out, is served", "logit_bias"
            )
        ids.add(int(key))
    return frozenset(ids)


def parse_completion(body: Any) -> CompletionCall:
    """The call ``body`` asks for; :class:`BadRequest` says what is wrong with it."""
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    for unsupported in ("echo", "suffix", "logprobs", "stop"):
        if body.get(unsupported) not in (None, False, [], ""):
            raise BadRequest(f"{unsupported} is not served", unsupported)
    if body.get("best_of") not in (None, 1):
        raise BadRequest("best_of is not served", "best_of")
    options = body.get("stream_options") or {}
    extras = body.get("vllm_xargs") or {}
    if not isinstance(options, Mapping) or not isinstance(extras, Mapping):
        raise BadRequest("stream_options and vllm_xargs must be objects")
    user, document = body.get("user") or "", extras.get("document") or ""
    if not isinstance(user, str) or not isinstance(document, str):
        raise BadRequest("user and vllm_xargs.document must be strings")
    top_k = _integer(body, "top_k", 0, -1, 1_000_000)
    return CompletionCall(
        prompt=_prompt(body.get("prompt")),
        max_tokens=_integer(body, "max_tokens", 16, 1, 1_000_000),
        temperature=_number(body, "temperature", 1.0, 0.0, 100.0),
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        top_k=max(top_k, 0),
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        n=_integer(body, "n", 1, 1, 16),
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
        return_token_ids=bool(body.get("return_token_ids")),
        suppressed=_suppressed(body.get("logit_bias")),
        stop_token_ids=_ids(body.get("stop_token_ids"), "stop_token_ids"),
        client=user,
        document=document,
    )


def random_seed() -> int:
    return secrets.randbits(63)


@dataclass(frozen=True)
class Answer:
    """The fixed fields of one completion's answer, and the chunk and body builders."""

    model: str
    prompt_ids: list[int]
    return_token_ids: bool
    id: str = ""
    created: int = 0

    @classmethod
    def start(cls, model: str, prompt_ids: list[int], return_token_ids: bool) -> Answer:
        return cls(
            model, prompt_ids, return_token_ids, f"cmpl-{uuid.uuid4().hex}", int(time.time())
        )

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def choice(
        self, index: int, text: str, ids: list[int], finish_reason: str | None, first: bool
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        if self.return_token_ids:
            choice["prompt_token_ids"] = self.prompt_ids if first else None
            choice["token_ids"] = ids
        return choice

    def chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        return self._envelope([choice])

    def usage_chunk(self, generated: int, cached: int) -> dict[str, Any]:
        return {**self._envelope([]), "usage": self.usage(generated, cached)}

    def body(self, choices: list[dict[str, Any]], generated: int, cached: int) -> dict[str, Any]:
        return {**self._envelope(choices), "usage": self.usage(generated, cached)}

    def usage(self, generated: int, cached: int) -> dict[str, Any]:
        """vLLM's usage; ``cached_tokens`` counts the prompt tokens the prefix cache served."""
        prompt = len(self.prompt_ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
            "prompt_tokens_details": {"cached_tokens": cached},
        }


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error object."""
    kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}
    return {
        "error": {
            "message": message,
            "type": kind.get(status, "ServiceUnavailableError" if status == 503 else "Error"),
            "param": param,
            "code": status,
        }
    }
