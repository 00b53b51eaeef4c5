"""Speculative decoding: the same greedy output as plain decoding, in fewer forward passes.

Drafts hit on a tiny checkpoint whose greedy output loops, and on the default one when the
prompt already holds what the model is about to write (the model continues mostly from its
last pieces, so a stretch of its own output, repeated, is continued the same way).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from lsprotocol import types

from codegeex2_lsp.backends.drafting import DRAFT_TOKENS, DraftTotals
from codegeex2_lsp.backends.generation import Cancelled, Generation, SamplingParams
from codegeex2_lsp.backends.local.inference import LocalModel
from codegeex2_lsp.backends.local.loader import load_model
from codegeex2_lsp.backends.tokenizer import read_tokenizer
from codegeex2_lsp.completion.pipeline import generate_raw, prepare
from codegeex2_lsp.completion.prompt import LineTokenCache
from codegeex2_lsp.settings.fields import Settings
from codegeex2_lsp.testing import TINY_CORPUS, write_tiny_model
from tests.lsp_support import inline, open_document, running_server, status, wait_for_state

PLAIN = SamplingParams(max_new_tokens=48)
SPECULATIVE = dataclasses.replace(PLAIN, speculative=True)
SOURCE = TINY_CORPUS[:1500]
LOOPING_SEED = 2
"""This seed's tiny checkpoint falls into a short loop of greedy output right away."""


def load(directory: Path) -> LocalModel:
    return LocalModel(
        load_model(directory, device=torch.device("cpu"), dtype=torch.float32),
        read_tokenizer(directory),
    )


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LocalModel:
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def looping(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    return load(write_tiny_model(tmp_path_factory.mktemp("looping"), seed=LOOPING_SEED))


@pytest.fixture(autouse=True)
def clean(model: LocalModel) -> None:
    model.forget()
    model.set_decode_mode("dynamic", 0)


def plain(model: LocalModel, ids: list[int], params: SamplingParams = PLAIN) -> Generation:
    """Plain decoding without reuse, on the same weights but none of ``model``'s state."""
    return LocalModel(model.model, model.tokenizer).generate(ids, params, cache_bytes=0)


def counted(model: LocalModel, run: object) -> DraftTotals:
    """The speculation counters' growth while ``run()`` ran."""
    before = dataclasses.replace(model.speculation)
    run()  # type: ignore[operator]
    after = model.speculation
    return DraftTotals(
        after.steps - before.steps,
        after.drafted - before.drafted,
        after.accepted - before.accepted,
    )


def repeating_prompt(model: LocalModel) -> list[int]:
    """A prompt that ends the way a stretch of the model's own earlier output began."""
    ids = model.tokenizer.prompt_ids(SOURCE)
    written = plain(model, ids, dataclasses.replace(PLAIN, max_new_tokens=64)).ids
    return [*ids, *written, *model.tokenizer.encode("\n# again\n"), *written[:3]]


def test_a_looping_model_gives_the_same_output_in_fewer_passes(looping: LocalModel) -> None:
    ids = looping.tokenizer.prompt_ids(SOURCE[-400:])
    params = dataclasses.replace(SPECULATIVE, max_new_tokens=120)
    result: list[Generation] = []
    totals = counted(looping, lambda: result.append(looping.generate(ids, params)))
    expected = plain(looping, ids, dataclasses.replace(params, speculative=False))
    assert result[0].ids == expected.ids
    assert result[0].text == expected.text
    assert len(expected.ids) == 120
    assert totals.accepted > 60
    # Plain decoding makes one pass per token after the first: 119.
    assert totals.steps < 60
    # Each pass adds its accepted drafts and one token of its own, but the last may stop early.
    assert 1 + totals.steps + totals.accepted - 120 in (0, 1)


def test_repeated_code_gives_the_same_output_and_accepts_drafts(model: LocalModel) -> None:
    ids = repeating_prompt(model)
    result: list[Generation] = []
    totals = counted(model, lambda: result.append(model.generate(ids, SPECULATIVE)))
    assert result[0].ids == plain(model, ids).ids
    assert totals.accepted >= 10
    assert totals.steps < PLAIN.max_new_tokens // 2


def test_rejected_drafts_leave_the_output_unchanged(model: LocalModel) -> None:
    rejected = 0
    for start in (0, 2000, 3500, 5000):
        ids = model.tokenizer.prompt_ids(TINY_CORPUS[start : start + 600])
        result: list[Generation] = []
        totals = counted(model, lambda: result.append(model.generate(ids, SPECULATIVE)))  # noqa: B023
        assert result[0].ids == plain(model, ids).ids, start
        rejected += totals.drafted - totals.accepted
    assert rejected >= 5


def test_speculation_is_off_unless_asked_and_when_sampling(model: LocalModel) -> None:
    ids = repeating_prompt(model)
    hot = SamplingParams(max_new_tokens=24, temperature=0.8, top_k=20, seed=5, speculative=True)
    assert counted(model, lambda: model.generate(ids, PLAIN)) == DraftTotals()
    sampled: list[Generation] = []
    assert counted(model, lambda: sampled.append(model.generate(ids, hot))) == DraftTotals()
    assert sampled[0].ids == plain(model, ids, dataclasses.replace(hot, speculative=False)).ids


def test_drafts_from_the_text_after_the_cursor(model: LocalModel) -> None:
    ids = model.tokenizer.prompt_ids(SOURCE)
    expected = plain(model, ids)
    # The user is rewriting: what the model will write is already after the cursor.
    following = tuple(expected.ids[1:40])
    with_following = dataclasses.replace(SPECULATIVE, following_ids=following)
    result: list[Generation] = []
    totals = counted(model, lambda: result.append(model.generate(ids, with_following)))
    assert result[0].ids == expected.ids
    assert totals.accepted >= 25
    assert counted(model, lambda: model.generate(ids, SPECULATIVE)).accepted < 10


def edits(model: LocalModel) -> list[list[int]]:
    """Keystrokes on a repeating prompt, then typing what was suggested, then going back."""
    ids = repeating_prompt(model)
    written = plain(model, ids).ids
    return [
        ids,
        ids[:-1],
        [*ids, *written[:5]],
        [*ids, *written[:5], *model.tokenizer.encode("x")],
        ids[: len(ids) // 2],
        ids,
    ]


def test_prefix_cache_reuse_across_calls_keeps_the_output(model: LocalModel) -> None:
    accepted = 0
    for number, ids in enumerate(edits(model)):
        result: list[Generation] = []
        totals = counted(
            model,
            lambda: result.append(model.generate(ids, SPECULATIVE, cache_key="doc")),  # noqa: B023
        )
        accepted += totals.accepted
        assert result[0].ids == plain(model, ids).ids, number
        assert result[0].reused_tokens + result[0].prefilled_tokens == len(ids)
        # The cache holds exactly the prompt and the tokens run after it, none rejected.
        (entry,) = model.prefixes._entries.values()
        assert entry.ids == [*ids, *result[0].ids][: len(entry.ids)]
        assert entry.cache is not None and entry.cache.get_seq_length() == len(entry.ids)
    assert accepted >= 20


def test_typing_the_suggestion_reuses_the_accepted_tokens(model: LocalModel) -> None:
    ids = repeating_prompt(model)
    first = model.generate(ids, SPECULATIVE, cache_key="doc")
    typed = [*ids, *first.ids[:20]]
    following = model.generate(typed, SPECULATIVE, cache_key="doc")
    assert following.prefilled_tokens == 1
    assert following.ids == plain(model, typed).ids


def test_cancelled_between_verification_passes(model: LocalModel) -> None:
    ids = repeating_prompt(model)
    model.generate(ids, dataclasses.replace(PLAIN, max_new_tokens=1), cache_key="doc")
    checks = 0

    def after_four_passes() -> bool:
        nonlocal checks
        checks += 1
        # One check before the prefill's only chunk (one token), then one before each pass.
        return checks > 5

    generated = model.totals.generated
    before = dataclasses.replace(model.speculation)
    with pytest.raises(Cancelled):
        model.generate(ids, SPECULATIVE, cache_key="doc", cancelled=after_four_passes)
    assert model.speculation.steps - before.steps == 4
    accepted = model.speculation.accepted - before.accepted
    assert accepted > 0
    # The token from the prompt's logits, then one per pass and the drafts it accepted.
    assert model.totals.generated - generated == 1 + 4 + accepted
    resumed = model.generate(ids, SPECULATIVE, cache_key="doc")
    assert resumed.prefilled_tokens == 1
    assert resumed.ids == plain(model, ids).ids


def test_the_early_stop_ends_at_the_same_token_mid_run(model: LocalModel) -> None:
    ids = repeating_prompt(model)
    for limit in range(1, 30):

        def stop_at(text: str, limit: int = limit) -> bool:
            return len(text) >= limit

        spec = model.generate(ids, SPECULATIVE, should_stop=stop_at, cache_key="doc")
        base = plain(model, ids)
        expected = LocalModel(model.model, model.tokenizer).generate(
            ids, PLAIN, should_stop=stop_at, cache_bytes=0
        )
        assert (spec.ids, spec.text, spec.finish_reason) == (
            expected.ids,
            expected.text,
            expected.finish_reason,
        ), limit
        assert spec.ids == base.ids[: len(spec.ids)]


def test_static_decode_with_drafts_gives_the_same_output(model: LocalModel) -> None:
    model.set_decode_mode("static", 2048)
    accepted = 0
    for number, ids in enumerate(edits(model)):
        result: list[Generation] = []
        totals = counted(
            model,
            lambda: result.append(model.generate(ids, SPECULATIVE, cache_key="doc")),  # noqa: B023
        )
        accepted += totals.accepted
        assert result[0].decode_mode == "static"
        assert result[0].ids == plain(model, ids).ids, number
    assert accepted >= 20


def test_static_decode_near_the_end_of_its_cache(looping: LocalModel) -> None:
    """No room for a padded pass: drafts are run one at a time, with the same result."""
    looping.set_decode_mode("static", 256)
    params = dataclasses.replace(SPECULATIVE, max_new_tokens=40)
    text = SOURCE[-900:]
    ids = looping.tokenizer.prompt_ids(text)
    while len(ids) + params.max_new_tokens > 256:
        text = text[10:]
        ids = looping.tokenizer.prompt_ids(text)
    assert len(ids) + params.max_new_tokens + DRAFT_TOKENS > 256
    result = looping.generate(ids, params)
    assert result.decode_mode == "static"
    assert result.ids == plain(looping, ids, dataclasses.replace(params, speculative=False)).ids
    looping.set_decode_mode("dynamic", 0)


def test_the_completion_path_drafts_from_the_suffix(model: LocalModel) -> None:
    settings = Settings(max_new_tokens=32, prefix_cache_mb=0, multiline="always")
    cache = LineTokenCache(model.tokenizer.encode)
    written = plain(model, model.tokenizer.prompt_ids(SOURCE)).text
    text = SOURCE + written[:200]
    line = SOURCE.count("\n")
    character = len(SOURCE) - (SOURCE.rfind("\n") + 1)

    def run(speculative: bool) -> tuple[Generation, DraftTotals]:
        request = prepare(
            text,
            line,
            character,
            settings=dataclasses.replace(settings, speculative=speculative),
            cache=cache,
            language_id="python",
        )
        assert request is not None
        result: list[Generation] = []
        totals = counted(model, lambda: result.append(generate_raw(request, model, lambda: False)))
        return result[0], totals

    fast, totals = run(True)
    slow, none = run(False)
    assert fast.ids == slow.ids
    assert none == DraftTotals()
    assert totals.accepted >= 16


async def test_the_status_command_counts_drafts_and_the_setting_turns_them_off(
    tmp_path: Path,
) -> None:
    model_dir = write_tiny_model(tmp_path / "looping", seed=LOOPING_SEED)
    flags = ("--model", str(model_dir), "--device", "cpu", "--debounce-ms", "0")
    settings = ("--candidates", "1", "--multiline", "always", "--max-new-tokens", "80")
    text = SOURCE[-400:] + "\n"
    line, character = text.count("\n"), 0
    async with running_server(*flags, *settings) as client:
        await wait_for_state(client, "ready")
        open_document(client, "file:///on.py", text)
        on = await inline(client, "file:///on.py", line, character)
        counted_on = (await status(client))["speculation"]
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codegeex2": {"speculative": False}})
        )
        assert (await status(client))["settings"]["speculative"] is False
        open_document(client, "file:///off.py", text)
        off = await inline(client, "file:///off.py", line, character)
        assert (await status(client))["speculation"] == counted_on
    assert on == off
    assert on and on[0]
    assert counted_on["accepted"] > 0
    assert counted_on["steps"] > 0
