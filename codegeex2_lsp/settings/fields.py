"""The one typed settings object, and every setting as users see it: its wire name, type,
bounds or choices, default and description (``SETTINGS``).

How each source of settings is applied on top of these is ``setting_sources``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from codegeex2_lsp.settings import checks as checks

SECTION = "codegeex2"
"""The configuration section clients send settings under."""

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantize = Literal["auto", "none", "int8", "int4"]
Kernels = Literal["fast", "exact"]
Multiline = Literal["auto", "always", "never"]
Compile = Literal["auto", "on", "off"]
Backend = Literal["local", "openai", "shared"]

DEFAULT_SERVER_URL = "http://127.0.0.1:8000/v1"

DEFAULT_DISABLED_LANGUAGES: tuple[str, ...] = (
    "plaintext",
    "markdown",
    "yaml",
    "help",
    "gitcommit",
    "gitrebase",
    "hgcommit",
    "svn",
    "cvs",
)
"""Languages where a code model helps least or reads what it should not: prose, commit
messages, help pages and configuration (the README says why for each)."""

DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".htpasswd",
    "credentials.json",
    "**/.ssh/**",
    "**/.aws/**",
    "**/.gnupg/**",
    "**/secrets/**",
)
"""Files that commonly hold keys, passwords or tokens: never read, never sent."""

LOCAL_ONLY = ("device", "dtype", "quantize", "kernels", "num_gpus")
"""LoadSpec fields only the in-process model uses."""

SERVER_ONLY = ("server_url", "served_model", "request_timeout_ms")
"""LoadSpec fields only a completion server's client uses."""

SHARED_ONLY = ("shared_idle_minutes",)
"""LoadSpec fields only the shared backend uses (it loads as local does, in its server)."""

UNUSED: dict[str, tuple[str, ...]] = {
    "local": SERVER_ONLY + SHARED_ONLY,
    "openai": LOCAL_ONLY + SHARED_ONLY,
    "shared": SERVER_ONLY,
}
"""The LoadSpec fields each backend ignores."""

API_KEY_VARIABLE = "CODEGEEX2_API_KEY"
"""The one place the API key comes from: the environment of the process that sends it."""

USER_ONLY = ("model", "backend", "serverUrl")
"""Keys that decide what is loaded and where the code and the API key go. Editors take them
from the user's own settings only, never from a workspace's (VS Code: machine scope)."""

START_ONLY = ("server_url",)
"""Fields taken only from flags and ``initializationOptions``: a ``didChangeConfiguration``
cannot tell the user's settings from a workspace's, so it cannot send code somewhere new."""

MIN_PROMPT_TOKENS = 16
"""The least room the prompt must keep in the context."""


@dataclass(frozen=True)
class LoadSpec:
    """What a (re)load depends on: a change to any field means loading again.

    Each field is named after the setting it comes from; :meth:`Settings.load_spec` is its one
    source, so a field added here is taken from the settings without further wiring, and the
    defaults are the settings' own (build one with ``Settings(...).load_spec()``).
    """

    model: str
    device: str
    dtype: Dtype
    quantize: Quantize
    kernels: Kernels
    num_gpus: int
    backend: Backend
    server_url: str
    served_model: str
    request_timeout_ms: int
    shared_idle_minutes: float


@dataclass(frozen=True)
class Settings:
    """Every setting of the server, fully defaulted; field names are snake_case of the LSP keys."""

    model: str = "THUDM/codegeex2-6b"
    device: str = "auto"
    dtype: Dtype = "auto"
    quantize: Quantize = "auto"
    kernels: Kernels = "fast"
    num_gpus: int = 1
    max_context_tokens: int = 2048
    context_tokens: int = 512
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 0
    multiline: Multiline = "auto"
    candidates: int = 3
    debounce_ms: int = 25
    prefix_cache_mb: int = 256
    compile: Compile = "auto"
    speculative: bool = True
    backend: Backend = "local"
    server_url: str = DEFAULT_SERVER_URL
    served_model: str = ""
    request_timeout_ms: int = 10000
    shared_idle_minutes: float = 10.0
    enable: bool = True
    disabled_languages: tuple[str, ...] = DEFAULT_DISABLED_LANGUAGES
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def load_spec(self) -> LoadSpec:
        """The part of the settings the loaded model depends on.

        Fields the chosen backend does not use keep their defaults, so changing them (the
        server's URL while the model runs here, the device while it runs on a server) does
        not reload anything.
        """
        spec = LoadSpec(
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(LoadSpec)}
        )
        unused = UNUSED[self.backend]
        defaults = Settings()
        return dataclasses.replace(spec, **{name: getattr(defaults, name) for name in unused})

    def within_context(self, context_tokens: int | None) -> Settings:
        """These settings with the context capped at ``context_tokens`` (a server's limit).

        The generated tokens shrink too when the cap leaves the prompt too little room.
        """
        if context_tokens is None or context_tokens >= self.max_context_tokens:
            return self
        new_tokens = min(self.max_new_tokens, max(context_tokens - 2 - MIN_PROMPT_TOKENS, 1))
        return dataclasses.replace(
            self, max_context_tokens=context_tokens, max_new_tokens=new_tokens
        )

    def prompt_budget(self) -> int:
        """Tokens left for the tag line and the code before the cursor.

        The two prefix tokens ``[gMASK] sop`` and the generated tokens share the context with it.
        """
        return self.max_context_tokens - self.max_new_tokens - 2


@dataclass(frozen=True)
class SettingSpec:
    """One setting as users see it: its wire name, its check, and its documentation.

    Built by :func:`_string`, :func:`_choice`, :func:`_boolean`, :func:`_integer` or
    :func:`_number`, which derive the check (``setting_checks``) from the choices or bounds, so
    each is stated once.
    """

    key: str
    field: str
    kind: Literal["string", "integer", "number", "boolean", "array"]
    description: str
    check: checks.Check
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False

    @property
    def default(self) -> Any:
        """The default as JSON has it: a list setting's default is a list."""
        value = getattr(Settings(), self.field)
        return list(value) if isinstance(value, tuple) else value

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def _string(
    key: str,
    field: str,
    description: str,
    check: Callable[[str], str],
    *,
    pattern: str | None = None,
    metavar: str | None = None,
) -> SettingSpec:
    return SettingSpec(key, field, "string", description, check, pattern=pattern, metavar=metavar)


def _choice(key: str, field: str, description: str, allowed: Any) -> SettingSpec:
    """A setting whose values are those of the ``Literal`` type ``allowed``."""
    choices: tuple[str, ...] = get_args(allowed)
    return SettingSpec(key, field, "string", description, checks.choice(choices), choices=choices)


def _boolean(key: str, field: str, description: str) -> SettingSpec:
    return SettingSpec(key, field, "boolean", description, checks.boolean, metavar="true|false")


def _strings(key: str, field: str, description: str, check: checks.Check) -> SettingSpec:
    """A list of strings; the flag takes them comma-separated."""
    return SettingSpec(key, field, "array", description, check, metavar="A,B,...")


def _integer(key: str, field: str, description: str, minimum: int, maximum: int) -> SettingSpec:
    check = checks.integer(minimum, maximum)
    return SettingSpec(key, field, "integer", description, check, minimum=minimum, maximum=maximum)


def _number(
    key: str,
    field: str,
    description: str,
    minimum: float,
    maximum: float,
    *,
    open_minimum: bool = False,
) -> SettingSpec:
    check = checks.number(minimum, maximum, open_minimum=open_minimum)
    return SettingSpec(
        key,
        field,
        "number",
        description,
        check,
        minimum=minimum,
        maximum=maximum,
        open_minimum=open_minimum,
    )


SETTINGS: tuple[SettingSpec, ...] = (
    _string(
        "model",
        "model",
        "Hugging Face model id or local directory of a ChatGLM2/CodeGeeX2 checkpoint.",
        checks.model,
    ),
    _string(
        "device",
        "device",
        "Where the model runs: auto picks cuda, then mps, then cpu.",
        checks.device,
        pattern=checks.DEVICE_PATTERN,
        metavar="auto|cpu|cuda|cuda:N|mps",
    ),
    _choice(
        "dtype",
        "dtype",
        "Weight precision: auto picks what is correct and fast on the device.",
        Dtype,
    ),
    _choice(
        "quantize",
        "quantize",
        "Weight-only quantization: auto picks int8 for large models on CPU and keeps full "
        "precision on GPUs when it fits; int8 and int4 halve and quarter the weights' memory.",
        Quantize,
    ),
    _choice(
        "kernels",
        "kernels",
        "Quantized weights' kernels: fast (the fastest that works here) or exact (integers "
        "times scales in plain torch, in float32 with dtype auto, as upstream computes).",
        Kernels,
    ),
    _integer(
        "numGpus",
        "num_gpus",
        "CUDA GPUs to split the model's layers across, from the device's GPU on.",
        1,
        16,
    ),
    _integer(
        "maxContextTokens",
        "max_context_tokens",
        "Tokens of context the model sees: prompt plus generated tokens.",
        64,
        8192,
    ),
    _integer(
        "contextTokens",
        "context_tokens",
        "Tokens of the prompt for snippets from other files of the workspace (definitions of "
        "the names used near the cursor, similar code in open files, recent edits), at most "
        "half of what the file's own text could use; 0 turns them off.",
        0,
        8192,
    ),
    _integer(
        "maxNewTokens", "max_new_tokens", "Most tokens generated for one suggestion.", 1, 1024
    ),
    _number(
        "temperature",
        "temperature",
        "Sampling temperature; 0 means greedy, the most likely continuation.",
        0.0,
        2.0,
    ),
    _number(
        "topP",
        "top_p",
        "Nucleus sampling: keep the most likely tokens up to this probability mass.",
        0.0,
        1.0,
        open_minimum=True,
    ),
    _integer(
        "topK",
        "top_k",
        "Sample only among the K most likely tokens; 0 turns the limit off.",
        0,
        1000,
    ),
    _choice(
        "multiline",
        "multiline",
        "Multi-line suggestions: auto (at the end of a line), always, or never.",
        Multiline,
    ),
    _integer(
        "candidates",
        "candidates",
        "Distinct suggestions offered on an explicitly invoked request.",
        1,
        10,
    ),
    _integer(
        "debounceMs",
        "debounce_ms",
        "Milliseconds to wait before serving an automatic request; 0 disables.",
        0,
        2000,
    ),
    _integer(
        "prefixCacheMb",
        "prefix_cache_mb",
        "MiB of KV cache kept across documents to reuse recent prompts; 0 turns reuse off.",
        0,
        65536,
    ),
    _choice(
        "compile",
        "compile",
        "Static KV cache and compiled decode step: auto (on CUDA only), on, or off.",
        Compile,
    ),
    _boolean(
        "speculative",
        "speculative",
        "Greedy decoding checks tokens drafted from the text at hand several at a time: "
        "the same suggestions, sooner.",
    ),
    _choice(
        "backend",
        "backend",
        "Where the model runs: local (in this process), shared (one server for all of this "
        "user's editor windows, started on demand) or openai (an OpenAI-compatible completion "
        "server such as vLLM, at serverUrl).",
        Backend,
    ),
    _string(
        "serverUrl",
        "server_url",
        "Base URL of the completion server's API (backend openai); the key comes from the "
        "CODEGEEX2_API_KEY environment variable only.",
        checks.server_url,
        pattern=checks.SERVER_URL_PATTERN,
        metavar="URL",
    ),
    _string(
        "servedModel",
        "served_model",
        "The model's name on the server; empty asks the server and uses its only model.",
        checks.served_model,
        metavar="NAME",
    ),
    _integer(
        "requestTimeoutMs",
        "request_timeout_ms",
        "Milliseconds to wait for the server to connect or to send the next token.",
        100,
        600000,
    ),
    _number(
        "sharedIdleMinutes",
        "shared_idle_minutes",
        "Minutes the shared model server stays without editor windows before it exits.",
        0.0,
        10080.0,
    ),
    _boolean(
        "enable",
        "enable",
        "Suggestions on or off everywhere; off, no request reaches the model.",
    ),
    _strings(
        "disabledLanguages",
        "disabled_languages",
        "Language ids (as the editor names them) that get no suggestions.",
        checks.language_ids,
    ),
    _strings(
        "exclude",
        "exclude",
        "Gitignore-style patterns, relative to the workspace folder or absolute (/ or ~/), of "
        "files that never get suggestions and are never read into a prompt.",
        checks.exclude_patterns,
    ),
)

SETTINGS_BY_KEY: dict[str, SettingSpec] = {spec.key: spec for spec in SETTINGS}
