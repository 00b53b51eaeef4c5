"""The local engine: prefix KV reuse gives the same outputs as none, and saves counted work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegeex2_lsp.backends.generation import Cancelled, Generation, SamplingParams
from codegeex2_lsp.backends.local import inference as local
from codegeex2_lsp.backends.local.inference import (
    PREFILL_CHUNK,
    LocalModel,
    common_prefix_length,
    decode_mode,
)
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.completion.pipeline import generate_raw, prepare
from codegeex2_lsp.completion.prompt import LineTokenCache
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import TINY_CORPUS

GREEDY = SamplingParams(max_new_tokens=24)
NO_REUSE = 0


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LocalModel:
    return LocalModel(
        load_model(tiny_model_dir, device=torch.device("cpu"), dtype=torch.float32),
        read_tokenizer(tiny_model_dir),
    )


@pytest.fixture(autouse=True)
def clean_model(model: LocalModel) -> None:
    """Every test starts with no kept caches and the dynamic decode path."""
    model.forget()
    model.set_decode_mode("dynamic", 0)


def ids_of(model: LocalModel, text: str) -> list[int]:
    return model.tokenizer.prompt_ids(text)


def fresh(model: LocalModel, ids: list[int], params: SamplingParams = GREEDY) -> Generation:
    """The generation without reuse, on the same weights but none of ``model``'s caches."""
    return LocalModel(model.model, model.tokenizer).generate(ids, params, cache_bytes=NO_REUSE)


SOURCE = TINY_CORPUS[:1500]


def edits() -> list[tuple[str, str]]:
    """A session of prompts: appends, a deletion, an edit in the middle, a new start."""
    typed = SOURCE + "def area(radius"
    middle = SOURCE.index("\n", 400)
    return [
        ("open", SOURCE),
        ("type a character", SOURCE + "d"),
        ("type a word", SOURCE + "def area"),
        ("type more", typed),
        ("delete back", SOURCE + "def ar"),
        ("edit the middle", SOURCE[:middle] + "  # note" + SOURCE[middle:] + "def ar"),
        ("window moves", SOURCE[200:] + "def ar"),
        ("back to the start", typed),
    ]


def test_reuse_gives_the_same_greedy_output_as_a_fresh_prefill(model: LocalModel) -> None:
    for what, text in edits():
        ids = ids_of(model, text)
        reused = model.generate(ids, GREEDY, cache_key="doc")
        expected = fresh(model, ids)
        assert reused.ids == expected.ids, what
        assert reused.text == expected.text, what
        assert reused.reused_tokens + reused.prefilled_tokens == len(ids), what
        if what.startswith("type"):
            assert reused.prefilled_tokens <= 8, what


def test_only_the_tokens_after_the_common_prefix_are_prefilled(model: LocalModel) -> None:
    first = ids_of(model, SOURCE)
    cold = model.generate(first, GREEDY, cache_key="doc")
    assert (cold.reused_tokens, cold.prefilled_tokens) == (0, len(first))
    second = ids_of(model, SOURCE + "x = 1")
    warm = model.generate(second, GREEDY, cache_key="doc")
    common = common_prefix_length(first, second)
    assert warm.reused_tokens >= common - 1
    assert warm.prefilled_tokens <= len(second) - common + 1
    assert warm.prefilled_tokens <= 0.05 * cold.prefilled_tokens


def test_same_prompt_again_prefills_one_token(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE)
    model.generate(ids, GREEDY, cache_key="doc")
    again = model.generate(ids, GREEDY, cache_key="doc")
    assert again.prefilled_tokens == 1


def test_a_long_prefill_hands_its_freed_memory_back(
    model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(local, "return_freed_memory", lambda: trims.append(1))
    ids = ids_of(model, SOURCE)
    assert len(ids) > PREFILL_CHUNK
    model.generate(ids, SamplingParams(max_new_tokens=2), cache_key="a")
    assert trims == [1]
    # The next keystroke prefills a token or two: nothing worth trimming.
    model.generate(ids + ids[-2:], SamplingParams(max_new_tokens=2), cache_key="a")
    assert trims == [1]


def test_typing_the_suggestion_reuses_its_generated_tokens(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE)
    first = model.generate(ids, GREEDY, cache_key="doc")
    accepted = ids + first.ids[:5]
    following = model.generate(accepted, GREEDY, cache_key="doc")
    assert following.prefilled_tokens == 1
    assert following.ids == fresh(model, accepted).ids


def test_documents_keep_their_own_caches(model: LocalModel) -> None:
    one, two = ids_of(model, SOURCE), ids_of(model, TINY_CORPUS[2000:3500])
    model.generate(one, GREEDY, cache_key="one")
    model.generate(two, GREEDY, cache_key="two")
    assert len(model.prefixes) == 2
    assert model.generate(one, GREEDY, cache_key="one").prefilled_tokens == 1
    assert model.generate(two, GREEDY, cache_key="two").prefilled_tokens == 1


def test_the_budget_drops_the_least_recent_document(model: LocalModel) -> None:
    one, two = ids_of(model, SOURCE), ids_of(model, TINY_CORPUS[2000:3500])
    model.generate(one, GREEDY, cache_key="one")
    size = model.prefixes.nbytes
    budget = size + size // 2
    model.generate(two, GREEDY, cache_key="two", cache_bytes=budget)
    assert len(model.prefixes) == 1
    assert model.prefixes.nbytes <= budget
    assert model.generate(two, GREEDY, cache_key="two", cache_bytes=budget).prefilled_tokens == 1
    assert model.generate(one, GREEDY, cache_key="one", cache_bytes=budget).reused_tokens == 0


def test_an_entry_over_the_budget_keeps_its_leading_tokens(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE)
    model.generate(ids, GREEDY, cache_key="doc")
    half = model.prefixes.nbytes // 2
    model.generate(ids, GREEDY, cache_key="doc", cache_bytes=half)
    assert 0 < model.prefixes.nbytes <= half
    again = model.generate(ids, GREEDY, cache_key="doc", cache_bytes=half)
    assert 0 < again.reused_tokens < len(ids)
    assert again.ids == fresh(model, ids).ids


def test_a_budget_of_zero_turns_reuse_off_and_frees_the_caches(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE)
    model.generate(ids, GREEDY, cache_key="doc")
    again = model.generate(ids, GREEDY, cache_key="doc", cache_bytes=0)
    assert (again.reused_tokens, again.prefilled_tokens) == (0, len(ids))
    assert len(model.prefixes) == 0


def test_cancelled_prefill_stops_early_and_its_work_is_reused(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE + SOURCE)
    assert len(ids) > 600
    checks = 0

    def after_two_chunks() -> bool:
        nonlocal checks
        checks += 1
        return checks > 2

    before = model.totals.prefilled
    with pytest.raises(Cancelled):
        model.generate(ids, GREEDY, cache_key="doc", cancelled=after_two_chunks)
    spent = model.totals.prefilled - before
    assert spent < len(ids)
    resumed = model.generate(ids, GREEDY, cache_key="doc")
    assert resumed.reused_tokens == spent
    assert resumed.prefilled_tokens == len(ids) - spent
    assert resumed.ids == fresh(model, ids).ids


def test_cancelled_decode_stops_at_the_next_token(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE[-300:])
    steps = 0

    def after_three_tokens() -> bool:
        nonlocal steps
        steps += 1
        return steps > 3

    before = model.totals.generated
    with pytest.raises(Cancelled):
        model.generate(
            ids, SamplingParams(max_new_tokens=60), cache_key="doc", cancelled=after_three_tokens
        )
    # One check before the prefill's only chunk, then one before each decode step.
    assert model.totals.generated - before == 3


def test_sampled_candidates_are_the_same_with_reuse(model: LocalModel) -> None:
    ids = ids_of(model, SOURCE)
    hot = SamplingParams(max_new_tokens=16, temperature=0.8, top_k=20, seed=3)
    model.generate(ids_of(model, SOURCE[:-40]), GREEDY, cache_key="doc")
    assert model.generate(ids, hot, cache_key="doc").ids == fresh(model, ids, hot).ids


def test_static_decode_gives_the_same_output(model: LocalModel) -> None:
    model.set_decode_mode("static", 2048)
    assert model.decode == "static"
    for what, text in edits():
        ids = ids_of(model, text)
        static = model.generate(ids, GREEDY, cache_key="doc")
        assert static.decode_mode == "static"
        assert static.ids == fresh(model, ids).ids, what


def test_static_decode_falls_back_when_the_prompt_does_not_fit(model: LocalModel) -> None:
    model.set_decode_mode("static", 256)
    ids = ids_of(model, SOURCE)
    assert len(ids) + GREEDY.max_new_tokens > 256
    long = model.generate(ids, GREEDY, cache_key="doc")
    assert long.decode_mode == "dynamic"
    short = ids_of(model, SOURCE[-300:])
    assert model.generate(short, GREEDY, cache_key="doc").decode_mode == "static"


def test_compile_setting_means_cuda_only_on_auto() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode_mode("auto", cpu) == "dynamic"
    assert decode_mode("auto", cuda) == "compiled"
    assert decode_mode("on", cpu) == "compiled"
    assert decode_mode("off", cuda) == "dynamic"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling for CPU takes minutes")
@pytest.mark.parametrize(
    ("quantize", "dtype"),
    [("none", torch.float32), ("int8", torch.bfloat16), ("int4", torch.bfloat16)],
)
def test_compiled_decode_gives_the_same_output(
    tiny_model_dir: Path, quantize: str, dtype: torch.dtype
) -> None:
    device = torch.device("cuda")
    compiled = LocalModel(
        load_model(tiny_model_dir, device=device, dtype=dtype, quantize=quantize),
        read_tokenizer(tiny_model_dir),
    )
    compiled.set_decode_mode("compiled", 2048)
    eager = LocalModel(compiled.model, compiled.tokenizer)
    for what, text in edits():
        ids = ids_of(compiled, text)
        assert compiled.generate(ids, GREEDY, cache_key="doc").decode_mode == "compiled"
        expected = eager.generate(ids, GREEDY, cache_bytes=NO_REUSE).ids
        assert compiled.generate(ids, GREEDY, cache_key="doc").ids == expected, what


def test_prompts_through_the_window_reuse_and_match(model: LocalModel) -> None:
    """The whole prompt path: a small budget trims from the top as the user types."""
    settings = Settings(max_context_tokens=300, max_new_tokens=16, prefix_cache_mb=64)
    cache = LineTokenCache(model.tokenizer.encode)
    reference = LocalModel(model.model, model.tokenizer)
    text = SOURCE
    prefilled = []
    for typed in "def area(radius):\n    return 3.14 * radius * radius\n":
        text += typed
        line = text.count("\n")
        column = len(text) - (text.rfind("\n") + 1)
        request = prepare(
            text, line, column, settings=settings, cache=cache, language_id="python", uri="a.py"
        )
        assert request is not None
        reused = generate_raw(request, model, lambda: False)
        off_request = prepare(
            text,
            line,
            column,
            settings=Settings(max_context_tokens=300, max_new_tokens=16, prefix_cache_mb=0),
            cache=cache,
            language_id="python",
        )
        assert off_request is not None
        expected = generate_raw(off_request, reference, lambda: False)
        assert reused.ids == expected.ids
        prefilled.append(reused.prefilled_tokens)
    # Most keystrokes prefill a handful of tokens; the window's coarse steps cost a few more.
    assert sorted(prefilled)[len(prefilled) // 2] <= 3
