"""The checks that turn a wire value into a setting's value, or raise ValueError saying what is
allowed; ``config`` builds each setting from one of them and its choices or bounds."""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import pathspec

Check = Callable[[Any], Any]
"""Turns a wire value into the field's value, or raises ValueError saying what is allowed."""

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


def device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(DEVICE_PATTERN, value):
        raise ValueError("'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index) or 'mps'")
    return value


def model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a Hugging Face model id or a local directory")
    return value.strip()


SERVER_URL_PATTERN = r"^https?://[^\s/?#]+[^\s?#]*$"


def server_url(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(SERVER_URL_PATTERN, value.strip()):
        raise ValueError("an http:// or https:// URL, such as http://127.0.0.1:8000/v1")
    # Credentials in the URL would go to the server in place of the key the user set, and
    # would show wherever the URL is shown: the key comes from the environment only.
    if "@" in urllib.parse.urlsplit(value.strip()).netloc:
        raise ValueError(
            "a URL without user:password@ (the API key comes from CODEGEEX2_API_KEY only)"
        )
    return value.strip().rstrip("/")


def plain_http_beyond_loopback(url: str) -> bool:
    """Whether ``url`` is plain http to a host other than this machine's loopback: what is sent
    there (the code, and a key) can be read on the way."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def served_model(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("the model's name on the server, or empty to ask the server")
    return value.strip()


def choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"one of {', '.join(repr(c) for c in choices)}")
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _finite(value: Any, expected: str) -> float:
    """A JSON or flag number as a float; NaN and infinities are never a setting's value."""
    # JSON from Lua and Emacs may carry integers as floats (64.0); booleans are never numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(expected)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(expected)
    return number


def integer(minimum: int, maximum: int) -> Check:
    expected = f"an integer from {minimum} to {maximum}"

    def check(value: Any) -> int:
        number = _finite(value, expected)
        if not number.is_integer() or not minimum <= number <= maximum:
            raise ValueError(expected)
        return int(number)

    return check


def number(minimum: float, maximum: float, *, open_minimum: bool) -> Check:
    low = f"greater than {minimum}" if open_minimum else f"at least {minimum}"
    expected = f"a number {low} and at most {maximum}"

    def check(value: Any) -> float:
        found = _finite(value, expected)
        too_low = found <= minimum if open_minimum else found < minimum
        if too_low or found > maximum:
            raise ValueError(expected)
        return found

    return check


def _strings(value: Any, expected: str) -> tuple[str, ...]:
    """A JSON list of strings as a tuple, so the settings stay immutable and comparable."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(expected)
    return tuple(v.strip() for v in value if v.strip())


def language_ids(value: Any) -> tuple[str, ...]:
    """Language ids as the editor sends them; unknown ones are kept, since editors invent ids."""
    return tuple(dict.fromkeys(v.lower() for v in _strings(value, "a list of language ids")))


def exclude_patterns(value: Any) -> tuple[str, ...]:
    """Gitignore-style patterns; the first that cannot be read is named, and none applies."""
    patterns = _strings(value, "a list of gitignore-style patterns")
    for pattern in patterns:
        try:
            pathspec.GitIgnoreSpec.from_lines([pattern])
        except ValueError as error:
            raise ValueError(
                f"gitignore-style patterns; {pattern!r} is not one ({error})"
            ) from None
    return patterns
