"""A real vLLM server on loopback, for the remote backend's tests and benchmark.

vLLM lives in a virtual environment of its own, built (or found) by ``scripts/vllm-env.sh``,
never in the project's. It serves a tiny ChatGLM2 checkpoint written by the project's writer,
with the shapes vLLM's CPU kernels accept: a head size of 32 (vLLM takes it as
``hidden_size / num_attention_heads``, so ``kv_channels`` must equal it) and a vocabulary
exactly the tokenizer's, so no padding id can be sampled. It runs without a tokenizer
(``--skip-tokenizer-init``): prompts go as ids and answers come back as ids, as the README
recommends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from codegeex2_lsp.testing import write_tiny_model
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent

VLLM_CHECKPOINT = {
    "num_layers": 8,
    "hidden_size": 512,
    "ffn_hidden_size": 1376,
    "num_attention_heads": 16,
    "kv_channels": 32,
    "multi_query_group_num": 2,
    "vocab_multiple": 1,
}
"""A small checkpoint's shape for vLLM: head size 32, vocabulary = the tokenizer's. Wide enough
that a token costs vLLM milliseconds on a CPU, so a request outlives the client's decision to
drop it, and an abort shows in the tokens generated."""

SERVED_NAME = "codegeex2-tiny"

STARTUP_SECONDS = 300.0
"""vLLM is ready in 20-60 s on an idle machine; a loaded one takes longer."""


def vllm_python() -> str:
    """The python of the vLLM environment, built by ``scripts/vllm-env.sh`` when missing."""
    given = os.environ.get("CODEGEEX2_VLLM_PYTHON")
    if given:
        return given
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "vllm-env.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def write_vllm_checkpoint(directory: Path, **shape: int) -> Path:
    return write_tiny_model(directory, **{**VLLM_CHECKPOINT, **shape})


class VllmServer:
    """One ``vllm.entrypoints.openai.api_server`` process serving ``model_dir`` on loopback.

    ``start`` waits for ``/health``; ``kill`` ends it the hard way (a crash), ``stop`` the
    polite way; ``start`` again brings it back on the same port. With ``dev_mode`` it has
    vLLM's ``/pause`` and ``/resume``, which hold its scheduler so a test can act on a request
    that cannot have finished, and it logs every request it adds and aborts.
    """

    def __init__(
        self,
        python: str,
        model_dir: Path,
        workdir: Path,
        *,
        api_key: str | None = None,
        max_model_len: int = 2048,
        kv_cache_bytes: int = 64 * 2**20,
        extra: tuple[str, ...] = (),
        dev_mode: bool = False,
    ) -> None:
        self.python = python
        self.model_dir = model_dir
        self.workdir = workdir
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.kv_cache_bytes = kv_cache_bytes
        self.extra = extra
        self.dev_mode = dev_mode
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "vllm.log"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def command(self) -> list[str]:
        command = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--skip-tokenizer-init",
            "--enforce-eager",
            "--distributed-executor-backend",
            "uni",
            "--dtype",
            "float32",
            "--max-model-len",
            str(self.max_model_len),
            "--kv-cache-memory-bytes",
            str(self.kv_cache_bytes),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--enable-per-request-metrics",
            *(("--enable-log-requests",) if self.dev_mode else ()),
            *self.extra,
        ]
        if self.api_key is not None:
            command += ["--api-key", self.api_key]
        return command

    def environment(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        cache = self.workdir / "cache"
        tmp.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "TMPDIR": str(tmp),
            "VLLM_CACHE_ROOT": str(cache),
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            **({"VLLM_SERVER_DEV_MODE": "1"} if self.dev_mode else {}),
        }

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.root}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vLLM was not ready in {STARTUP_SECONDS:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, number: int, wait: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def kill(self) -> None:
        """End the server at once, as a crash or a power cut would."""
        self._signal(signal.SIGKILL, 30)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 30)

    def _post(self, route: str, **params: str) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = httpx.post(
            f"{self.root}{route}", params=params, headers=headers, timeout=60, trust_env=False
        )
        response.raise_for_status()

    def pause(self) -> None:
        """Hold the scheduler (``dev_mode``): requests are taken in and kept, none is run."""
        self._post("/pause", mode="keep")

    def resume(self) -> None:
        self._post("/resume")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_for_log(self, pattern: str, since: int) -> re.Match[str]:
        """The first line after byte ``since`` of the log that matches ``pattern``."""
        deadline = time.monotonic() + 60
        while True:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode("utf-8", errors="replace")
            match = re.search(pattern, text)
            if match is not None:
                return match
            assert time.monotonic() < deadline, f"vLLM never logged {pattern!r}"
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        """vLLM's Prometheus metrics, each summed over its labels."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        text = httpx.get(f"{self.root}/metrics", headers=headers, timeout=10, trust_env=False).text
        totals: dict[str, float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                name, value = match.group(1), float(match.group(2))
                totals[name] = totals.get(name, 0.0) + value
        return totals


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")
