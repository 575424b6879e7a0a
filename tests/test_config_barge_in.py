"""``[media]`` barge-in keys: defaults, per-language backchannels, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from waihu.config import ConfigError, load_config
from waihu.media.barge_in import DEFAULT_BACKCHANNELS, BargeInSettings

MINIMAL = """
[trunk.office]
type = "sip"
proxy = "127.0.0.1:5080"

[asr.default]
type = "vosk"

[nlu.default]
type = "keywords"

[storage]
type = "sqlite"
path = "waihu.db"
"""


def load(tmp_path: Path, media: str, provider_types: dict):
    path = tmp_path / "waihud.toml"
    path.write_text(MINIMAL + "\n[media]\n" + media, encoding="utf-8")
    return load_config(path, provider_types)


def test_defaults_give_the_built_in_lists(tmp_path: Path, provider_types: dict) -> None:
    media = load(tmp_path, "", provider_types).media
    assert media.echo_guard and media.barge_in_words
    settings = media.barge_in_settings("zh-CN")
    assert settings == BargeInSettings(backchannels=DEFAULT_BACKCHANNELS["zh"])
    assert media.barge_in_recovery_ms == 1500


def test_configured_keys_reach_the_judge(tmp_path: Path, provider_types: dict) -> None:
    text = """
barge_in_ms = 240
barge_in_confirm_ms = 1000
barge_in_words = false
echo_guard = false
backchannels = { ko = ["네", "넵"] }
"""
    media = load(tmp_path, text, provider_types).media
    assert media.barge_in_settings("ko") == BargeInSettings(
        words=False, pause_ms=240, confirm_ms=1000, backchannels=("네", "넵")
    )
    assert media.barge_in_settings("zh").backchannels == DEFAULT_BACKCHANNELS["zh"]
    assert not media.echo_guard


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backchannels = { ko = [] }", "media.backchannels: each language needs a non-empty"),
        ('backchannels = { zh = [" "] }', "media.backchannels: each language needs a non-empty"),
        ("barge_in_confirm_ms = 0", "media.barge_in_confirm_ms: must be"),
        ('barge_in_words = "yes"', "media.barge_in_words"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, provider_types: dict, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, provider_types)
    assert any(message in p for p in info.value.problems), info.value.problems
