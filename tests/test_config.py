"""Settings: every source through one check, bad values never replace good ones.

The defaults are the README's: test_readme.py checks each against its row of the table."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path

import pytest

from codegeex2_lsp.backends.shared.launcher import SPEC_FIELDS, server_command, spec_values
from codegeex2_lsp.settings.fields import (
    SETTINGS,
    LoadSpec,
    Settings,
    SettingSpec,
)
from codegeex2_lsp.settings.sources import (
    add_arguments,
    apply_updates,
    from_arguments,
    section_from_configuration,
    to_arguments,
)


def test_every_field_has_exactly_one_spec() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {spec.field for spec in SETTINGS} == fields
    assert len(SETTINGS) == len(fields)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model": "/models/cg2"}, {"model": "/models/cg2"}),
        ({"device": "cuda:1"}, {"device": "cuda:1"}),
        ({"device": "mps"}, {"device": "mps"}),
        ({"dtype": "float16"}, {"dtype": "float16"}),
        ({"maxNewTokens": 128.0}, {"max_new_tokens": 128}),
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"topP": 1}, {"top_p": 1.0}),
        ({"multiline": "never", "candidates": 1}, {"multiline": "never", "candidates": 1}),
        ({"debounceMs": 0}, {"debounce_ms": 0}),
        ({"topK": None}, {}),
    ],
)
def test_valid_values_apply(raw: dict[str, object], expected: dict[str, object]) -> None:
    update = apply_updates(Settings(), raw)
    assert update.errors == ()
    assert update.settings == dataclasses.replace(Settings(), **expected)


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        ({"device": "gpu"}, "device", "'cuda:N'"),
        ({"device": "cuda:x"}, "device", "'mps'"),
        ({"dtype": "int4"}, "dtype", "'bfloat16'"),
        ({"maxNewTokens": 0}, "maxNewTokens", "from 1 to 1024"),
        ({"maxNewTokens": 12.5}, "maxNewTokens", "integer"),
        ({"maxContextTokens": True}, "maxContextTokens", "integer"),
        ({"temperature": -0.1}, "temperature", "at least 0.0"),
        ({"topP": 0}, "topP", "greater than 0.0"),
        ({"model": ""}, "model", "local directory"),
        ({"multiline": "sometimes"}, "multiline", "'always'"),
        ({"candidates": "3"}, "candidates", "from 1 to 10"),
    ],
)
def test_invalid_values_name_the_key_and_keep_the_previous(
    raw: dict[str, object], key: str, allowed: str
) -> None:
    before = Settings(temperature=0.3)
    update = apply_updates(before, raw)
    assert update.settings == before
    (error,) = update.errors
    assert f"codegeex2.{key}" in error
    assert allowed in error


def test_one_bad_value_does_not_block_the_good_ones() -> None:
    update = apply_updates(Settings(), {"dtype": "float32", "device": "tpu"})
    assert update.settings.dtype == "float32"
    assert update.settings.device == "auto"
    assert len(update.errors) == 1


def test_unknown_keys_warn_and_are_ignored() -> None:
    update = apply_updates(Settings(), {"modle": "x", "model": "y"})
    assert update.settings.model == "y"
    assert update.warnings == ("unknown setting 'modle' ignored",)
    assert update.errors == ()


def test_new_tokens_must_leave_room_for_the_prompt() -> None:
    update = apply_updates(Settings(), {"maxContextTokens": 128, "maxNewTokens": 120})
    assert update.settings == Settings()
    assert "maxNewTokens" in update.errors[0]


def test_settings_must_be_an_object() -> None:
    update = apply_updates(Settings(), ["model"])  # type: ignore[arg-type]
    assert update.settings == Settings()
    assert update.errors


def test_prompt_budget_leaves_room_for_prefix_tokens_and_generation() -> None:
    assert Settings().prompt_budget() == 2048 - 64 - 2


def test_load_spec_holds_what_a_load_depends_on() -> None:
    settings = Settings(
        model="/models/cg2",
        device="cuda:1",
        dtype="float16",
        quantize="int4",
        kernels="exact",
        num_gpus=2,
    )
    defaults = Settings()
    assert settings.load_spec() == LoadSpec(
        model="/models/cg2",
        device="cuda:1",
        dtype="float16",
        quantize="int4",
        kernels="exact",
        num_gpus=2,
        backend="local",
        server_url=defaults.server_url,
        served_model=defaults.served_model,
        request_timeout_ms=defaults.request_timeout_ms,
        shared_idle_minutes=defaults.shared_idle_minutes,
    )


def test_load_spec_changes_only_with_load_settings() -> None:
    assert Settings().load_spec() == Settings(temperature=1.0, candidates=1).load_spec()
    assert Settings().load_spec() != Settings(dtype="float32").load_spec()
    assert Settings().load_spec() != Settings(quantize="int4").load_spec()
    assert Settings().load_spec() != Settings(kernels="exact").load_spec()
    assert Settings().load_spec() != Settings(num_gpus=2).load_spec()


def test_a_shared_server_is_told_apart_by_what_a_local_load_depends_on() -> None:
    shared = Settings(backend="shared")
    assert shared.load_spec() != Settings().load_spec()
    assert shared.load_spec() != Settings(backend="shared", device="cpu").load_spec()
    assert shared.load_spec() == Settings(backend="shared", server_url="https://x/v1").load_spec()
    assert Settings().load_spec() == Settings(shared_idle_minutes=1).load_spec()
    assert shared.load_spec().shared_idle_minutes == 10.0


def test_load_spec_ignores_what_the_backend_does_not_use() -> None:
    local = Settings()
    assert local.load_spec() == Settings(server_url="https://gpu.example/v1").load_spec()
    remote = Settings(backend="openai")
    assert remote.load_spec() != local.load_spec()
    assert remote.load_spec() == Settings(backend="openai", device="cuda:1").load_spec()
    for change in (
        {"server_url": "https://gpu.example/v1"},
        {"served_model": "codegeex2"},
        {"request_timeout_ms": 500},
        {"model": "/models/codegeex2-6b"},
    ):
        moved = dataclasses.replace(remote, **change)
        assert moved.load_spec() != remote.load_spec(), change


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://gpu.example:8443/v1/", "https://gpu.example:8443/v1"),
        (" http://127.0.0.1:8000/v1 ", "http://127.0.0.1:8000/v1"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ],
)
def test_server_urls_are_normalized(raw: str, expected: str) -> None:
    assert apply_updates(Settings(), {"serverUrl": raw}).settings.server_url == expected


@pytest.mark.parametrize("raw", ["127.0.0.1:8000", "ftp://host/v1", "http://", "", 8000])
def test_server_urls_must_be_http(raw: object) -> None:
    update = apply_updates(Settings(), {"serverUrl": raw})
    assert update.settings.server_url == Settings().server_url
    assert update.errors and "codegeex2.serverUrl" in update.errors[0]


def test_a_server_context_caps_the_context_and_keeps_room_for_the_prompt() -> None:
    settings = Settings(max_context_tokens=4096, max_new_tokens=64)
    assert settings.within_context(None) is settings
    assert settings.within_context(8192) is settings
    capped = settings.within_context(1024)
    assert (capped.max_context_tokens, capped.max_new_tokens) == (1024, 64)
    small = settings.within_context(40)
    assert (small.max_context_tokens, small.max_new_tokens) == (40, 22)
    assert small.prompt_budget() == 16


def test_load_spec_fields_are_settings() -> None:
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert {f.name for f in dataclasses.fields(LoadSpec)} <= settings


def test_choice_settings_offer_exactly_their_types_values() -> None:
    hints = typing.get_type_hints(Settings)
    choices = {spec.field: spec.choices for spec in SETTINGS if spec.choices}
    assert set(choices) == {"dtype", "quantize", "kernels", "multiline", "compile", "backend"}
    for field, allowed in choices.items():
        assert allowed == typing.get_args(hints[field])
        for value in allowed:
            assert apply_updates(Settings(), {_key(field): value}).errors == ()


def _key(field: str) -> str:
    return next(spec.key for spec in SETTINGS if spec.field == field)


@pytest.mark.parametrize(
    "spec", [s for s in SETTINGS if s.kind in ("integer", "number")], ids=lambda spec: spec.key
)
def test_numeric_bounds_are_the_ones_checked(spec: SettingSpec) -> None:
    assert spec.minimum is not None and spec.maximum is not None
    step = 1 if spec.kind == "integer" else 0.001
    inside = [spec.maximum] if spec.open_minimum else [spec.minimum, spec.maximum]
    outside = [spec.minimum - step, spec.maximum + step]
    if spec.open_minimum:
        outside.append(spec.minimum)
    for value in inside:
        assert spec.check(value) == value
    for value in outside:
        with pytest.raises(ValueError):
            spec.check(value)


@pytest.mark.parametrize(
    "spec", [s for s in SETTINGS if s.kind in ("integer", "number")], ids=lambda spec: spec.key
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(spec: SettingSpec, value: float) -> None:
    update = apply_updates(Settings(), {spec.key: value})
    assert update.settings == Settings()
    (error,) = update.errors
    assert f"codegeex2.{spec.key}" in error
    assert "expected a" in error


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"codegeex2": {"model": "m"}}, {"model": "m"}),
        ({"model": "m", "device": "cpu"}, {"model": "m", "device": "cpu"}),
        ({"python": {"analysis": {}}}, None),
        (None, None),
        ("codegeex2", None),
    ],
)
def test_configuration_section_is_found_in_each_client_shape(
    payload: object, expected: object
) -> None:
    assert section_from_configuration(payload) == expected


def test_flags_are_kebab_case_and_override_only_what_is_given() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--max-new-tokens", "32", "--device", "cpu", "--top-p", "0.5"])
    update = from_arguments(args)
    assert update.settings == Settings(max_new_tokens=32, device="cpu", top_p=0.5)


def test_boolean_flags_take_words_and_settings_take_json_booleans() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args(["--speculative", "off"])).settings == Settings(
        speculative=False
    )
    assert from_arguments(parser.parse_args(["--speculative", "True"])).settings == Settings()
    update = from_arguments(parser.parse_args(["--speculative", "maybe"]))
    assert update.settings == Settings()
    assert "codegeex2.speculative" in update.errors[0]
    update = apply_updates(Settings(), {"speculative": 0})
    assert update.settings == Settings()
    assert "expected true or false" in update.errors[0]
    assert apply_updates(Settings(), {"speculative": False}).settings.speculative is False


def test_list_flags_are_comma_separated() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--disabled-languages", "Markdown, yaml", "--exclude", ""])
    update = from_arguments(args)
    assert update.settings == Settings(disabled_languages=("markdown", "yaml"), exclude=())


def test_bad_flag_values_are_reported() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    update = from_arguments(parser.parse_args(["--dtype", "fp8"]))
    assert update.settings == Settings()
    assert "codegeex2.dtype" in update.errors[0]


def test_nan_flags_are_reported() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    update = from_arguments(parser.parse_args(["--temperature", "nan", "--top-p", "inf"]))
    assert update.settings == Settings()
    assert len(update.errors) == 2


def parse_flags(arguments: list[str]) -> Settings:
    """What a process of this package's command line makes of ``arguments``'s settings."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    update = from_arguments(parser.parse_known_args(arguments)[0])
    assert not update.errors, update.errors
    return update.settings


def test_every_setting_round_trips_through_its_flag() -> None:
    """Values of every kind, none of them a default, come back from their flags as they were."""
    settings = Settings(
        model="-model-named-like-a-flag",
        device="cuda:1",
        dtype="float16",
        quantize="int4",
        kernels="exact",
        num_gpus=2,
        max_context_tokens=4096,
        context_tokens=256,
        max_new_tokens=100,
        temperature=0.1 + 0.2,
        top_p=0.8,
        top_k=40,
        multiline="always",
        candidates=1,
        debounce_ms=0,
        prefix_cache_mb=64,
        compile="off",
        speculative=False,
        backend="shared",
        server_url="http://127.0.0.1:9000/v1",
        served_model="cg2",
        request_timeout_ms=2500,
        shared_idle_minutes=0.25,
        enable=False,
        disabled_languages=("go",),
        exclude=(),
    )
    changed = {
        f.name
        for f in dataclasses.fields(Settings)
        if getattr(settings, f.name) != getattr(Settings(), f.name)
    }
    assert changed == {spec.field for spec in SETTINGS}
    assert parse_flags(to_arguments(settings, [spec.field for spec in SETTINGS])) == settings


def test_a_list_item_with_a_comma_has_no_flag() -> None:
    with pytest.raises(ValueError, match="comma"):
        to_arguments(Settings(exclude=("*.{pem,key}",)), ["exclude"])


def test_a_shared_server_gets_every_setting_it_is_told_apart_by(tmp_path: Path) -> None:
    spec = Settings(
        model=str(tmp_path), device="cuda:1", dtype="float16", quantize="int4", num_gpus=2
    ).load_spec()
    command = server_command(spec, tmp_path / "s.sock", 5)
    served = parse_flags(command[command.index("serve") + 1 :]).load_spec()
    assert {field: getattr(served, field) for field in SPEC_FIELDS} == spec_values(spec)
