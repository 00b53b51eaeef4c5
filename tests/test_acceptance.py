"""Acceptance counts: what is shown, accepted and dismissed, kept in one file for every server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from codegeex2_lsp.cli import main
from codegeex2_lsp.completion.acceptance import (
    Acceptance,
    Counts,
    StatsStore,
    default_stats_path,
    read_stats,
)


def counts(acceptance: Acceptance, language: str = "python", backend: str = "local") -> Counts:
    return acceptance.store.table()[language][backend]


def test_the_file_lives_in_the_state_directory(state_home: Path) -> None:
    assert default_stats_path() == state_home / "codegeex2-lsp" / "stats.json"


def test_answers_are_shown_then_accepted_or_dismissed(tmp_path: Path) -> None:
    changes: list[None] = []
    acceptance = Acceptance(StatsStore(tmp_path / "stats.json"), lambda: changes.append(None))
    first = acceptance.shown("file:///a.py", "python", "local", ["x = 1", "x = 2"])
    assert len(set(first)) == 2
    second = acceptance.shown("file:///a.py", "python", "local", ["return x"])
    assert counts(acceptance) == Counts(shown=2, dismissed=1)
    assert acceptance.accept(second[0])
    assert acceptance.accept(second[0]), "an accept run twice counts once"
    assert counts(acceptance) == Counts(shown=2, accepted=1, dismissed=1, accepted_chars=8)
    # An empty answer takes the place of what was shown; the accepted one stays accepted.
    assert acceptance.shown("file:///a.py", "python", "local", []) == []
    acceptance.shown("file:///b.rs", "rust", "openai", ["fn"])
    acceptance.forget("file:///b.rs")
    assert counts(acceptance, "rust", "openai") == Counts(shown=1, dismissed=1)
    assert not acceptance.accept("no-such-id")
    assert len(changes) == 6


def test_an_accept_after_the_next_answer_still_counts(tmp_path: Path) -> None:
    acceptance = Acceptance(StatsStore(tmp_path / "stats.json"))
    (taken,) = acceptance.shown("file:///a.py", "python", "local", ["pass"])
    acceptance.shown("file:///a.py", "python", "local", ["more"])
    assert acceptance.accept(taken)
    assert counts(acceptance) == Counts(shown=2, accepted=1, accepted_chars=4)


def test_writes_add_to_what_other_servers_wrote(tmp_path: Path) -> None:
    path = tmp_path / "state" / "stats.json"
    one, two = Acceptance(StatsStore(path)), Acceptance(StatsStore(path))
    (a,) = one.shown("file:///a.py", "python", "local", ["abc"])
    one.accept(a)
    two.shown("file:///b.py", "python", "local", ["de"])
    two.shown("file:///c.go", "go", "shared", ["f"])
    one.store.flush()
    two.store.flush()
    one.store.flush()
    table = read_stats(path)
    assert table["python"]["local"] == Counts(shown=2, accepted=1, accepted_chars=3)
    assert table["go"]["shared"] == Counts(shown=1)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".stats-")] == []
    # A new server starts from what the file holds.
    assert StatsStore(path).table() == table


def test_a_corrupt_file_is_set_aside_once_and_counting_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stats.json"
    path.write_text('{"version": 1, "languages": {"python": ', encoding="utf-8")
    caplog.set_level(logging.WARNING)
    store = StatsStore(path)
    assert store.table() == {}
    assert (tmp_path / "stats.json.corrupt").exists()
    acceptance = Acceptance(store)
    acceptance.shown("file:///a.py", "python", "local", ["x"])
    store.flush()
    assert read_stats(path)["python"]["local"] == Counts(shown=1)
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"version": 2, "languages": {}}',
        '{"version": 1, "languages": {"python": {"backends": {"local": {"shown": -1}}}}}',
        '{"version": 1, "languages": {"python": {"backends": {"local": {"shown": "3"}}}}}',
        '{"version": 1, "languages": {"python": 3}}',
    ],
)
def test_files_of_the_wrong_shape_are_corrupt(tmp_path: Path, text: str) -> None:
    path = tmp_path / "stats.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError):
        read_stats(path)


def test_an_unwritable_state_directory_keeps_the_counts_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    store = StatsStore(blocker / "stats.json")
    acceptance = Acceptance(store)
    acceptance.shown("file:///a.py", "python", "local", ["x"])
    store.flush()
    assert store.table()["python"]["local"] == Counts(shown=1)


def test_the_stats_command_prints_totals_and_languages(
    state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = StatsStore()
    acceptance = Acceptance(store)
    (a,) = acceptance.shown("file:///a.py", "python", "local", ["abcd"])
    acceptance.accept(a)
    acceptance.shown("file:///a.py", "python", "openai", ["x"])
    acceptance.shown("file:///a.py", "python", "openai", ["y"])
    acceptance.shown("file:///m.go", "go", "local", ["z"])
    store.flush()
    assert main(["stats", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shown"] == 4 and summary["accepted"] == 1
    assert summary["dismissed"] == 1 and summary["acceptedChars"] == 4
    python = summary["languages"]["python"]
    assert python["shown"] == 3 and python["dismissed"] == 1
    assert python["backends"]["openai"] == {
        "shown": 2,
        "accepted": 0,
        "dismissed": 1,
        "acceptedChars": 0,
    }
    assert main(["stats"]) == 0
    text = capsys.readouterr().out
    assert str(default_stats_path()) in text
    assert any(line.split()[:3] == ["python", "local", "1"] for line in text.splitlines())


def test_the_stats_command_reports_a_corrupt_file(
    state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = default_stats_path()
    path.parent.mkdir(parents=True)
    path.write_text("not json", encoding="utf-8")
    assert main(["stats", "--json"]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == "not json", "reading never changes the file"
