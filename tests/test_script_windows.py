"""Per-node end-of-speech windows in the script (``end_window_ms``, ``quick_end_ms``),
and how a call combines them with ``[media]`` (``waihu.dialog.complete.node_windows``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from waihu.config import ConfigError, MediaConfig, structure_strict
from waihu.dialog.complete import node_windows
from waihu.dialog.script import Script, ScriptError, load_script

SCRIPT = """
[script]
start = "ask_date"

[intents.affirm]
keywords = ["네"]

[nodes.ask_date]
say = [{{ text = "언제가 좋으세요?" }}]
on = {{ affirm = "confirm", default = "confirm" }}
{ask_date}

[nodes.confirm]
say = [{{ text = "맞으세요?" }}]
on = {{ affirm = "bye", default = "bye" }}
{confirm}

[nodes.bye]
say = [{{ text = "감사합니다" }}]
end = true
"""
MEDIA_END, MEDIA_QUICK = 700, 250


def load(tmp_path: Path, ask_date: str = "", confirm: str = "") -> Script:
    path = tmp_path / "dates.toml"
    path.write_text(SCRIPT.format(ask_date=ask_date, confirm=confirm), encoding="utf-8")
    return load_script(path, check_recordings=False)


def test_a_node_without_keys_takes_the_media_windows(tmp_path: Path) -> None:
    node = load(tmp_path).nodes["confirm"]
    assert (node.end_window_ms, node.quick_end_ms) == (None, None)
    assert node_windows(node, MEDIA_END, MEDIA_QUICK) == (MEDIA_END, MEDIA_QUICK)


def test_a_date_question_gets_a_longer_window(tmp_path: Path) -> None:
    script = load(tmp_path, ask_date="end_window_ms = 1500\nquick_end_ms = 400")
    assert node_windows(script.nodes["ask_date"], MEDIA_END, MEDIA_QUICK) == (1500, 400)
    assert node_windows(script.nodes["confirm"], MEDIA_END, MEDIA_QUICK) == (700, 250)


def test_quick_end_ms_zero_turns_the_early_end_off_at_that_node(tmp_path: Path) -> None:
    script = load(tmp_path, ask_date="quick_end_ms = 0")
    assert node_windows(script.nodes["ask_date"], MEDIA_END, MEDIA_QUICK) == (MEDIA_END, 0)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("end_window_ms = 5", r"nodes\.ask_date.*end_window_ms.*at least 20"),
        ("quick_end_ms = -1", r"nodes\.ask_date.*quick_end_ms.*at least 0"),
        ('end_window_ms = "long"', r"nodes\.ask_date.*end_window_ms"),
        (
            "end_window_ms = 500\nquick_end_ms = 500",
            r"nodes\.ask_date\.quick_end_ms: 500 must be shorter than end_window_ms 500",
        ),
        (
            "end_window_ms = 500\nquick_end_ms = 600",
            r"dates\.toml:\d+: nodes\.ask_date\.quick_end_ms: 600 must be shorter than"
            r" end_window_ms 500",
        ),
    ],
)
def test_bad_windows_are_named_with_node_and_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        load(tmp_path, ask_date=keys)


def test_media_quick_end_ms_defaults_to_250_and_refuses_negatives() -> None:
    assert MediaConfig().quick_end_ms == 250
    assert structure_strict(MediaConfig, {"quick_end_ms": 0}, file="w.toml", key="media")
    with pytest.raises(ConfigError, match="quick_end_ms"):
        structure_strict(MediaConfig, {"quick_end_ms": -5}, file="w.toml", key="media")
