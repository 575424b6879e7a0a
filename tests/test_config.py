"""Config loading: strict types, unknown keys, provider tables, messages naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from waihu.config import ConfigError, load_config

from conftest import REPO

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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "waihud.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, provider_types: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), provider_types)
    return info.value.problems


def test_shipped_config_is_valid(provider_types: dict) -> None:
    config = load_config(REPO / "etc/waihu/waihud.toml", provider_types)
    assert config.daemon.control_socket == "/run/waihu/control.sock"
    assert [s.name for s in config.sections("trunk")] == ["office"]
    assert config.sections("trunk")[0].config.proxy == "127.0.0.1:5080"


def test_defaults_fill_in(tmp_path: Path, provider_types: dict) -> None:
    config = load_config(write(tmp_path, MINIMAL), provider_types)
    assert config.media.end_silence_ms == 700
    assert config.call.asr == "default"


def test_wrong_type_names_file_and_key(tmp_path: Path, provider_types: dict) -> None:
    found = problems(tmp_path, MINIMAL + '\n[media]\nend_silence_ms = "long"\n', provider_types)
    assert found == [
        f"{tmp_path / 'waihud.toml'}: media.end_silence_ms: must be an integer, not a string"
    ]


def test_unknown_key_in_provider_table(tmp_path: Path, provider_types: dict) -> None:
    text = MINIMAL.replace('proxy = "127.0.0.1:5080"', 'proxy = "127.0.0.1:5080"\nprot = 1')
    (found,) = problems(tmp_path, text, provider_types)
    assert "trunk.office" in found and "unknown key prot" in found
    assert found.startswith(str(tmp_path / "waihud.toml"))


def test_boolean_is_not_an_integer(tmp_path: Path, provider_types: dict) -> None:
    (found,) = problems(tmp_path, MINIMAL + "\n[daemon]\nmax_calls = true\n", provider_types)
    assert "daemon.max_calls: must be an integer, not a boolean" in found


def test_validator_message_and_every_problem_reported(tmp_path: Path, provider_types: dict) -> None:
    text = MINIMAL + '\n[media]\nvad_aggressiveness = 7\n[daemon]\nlog_level = "loud"\n'
    found = problems(tmp_path, text, provider_types)
    assert len(found) == 2
    assert any("media.vad_aggressiveness" in p for p in found)
    assert any("daemon.log_level" in p and "loud" in p for p in found)


def test_unknown_provider_type_lists_installed(tmp_path: Path, provider_types: dict) -> None:
    (found,) = problems(tmp_path, MINIMAL.replace('type = "sip"', 'type = "h323"'), provider_types)
    assert "trunk.office.type: unknown trunk type 'h323' (installed: sip)" in found


def test_missing_sections_and_references(tmp_path: Path, provider_types: dict) -> None:
    text = MINIMAL.replace('[storage]\ntype = "sqlite"\npath = "waihu.db"', "")
    text += '\n[call]\ntrunk = "carrier"\n'
    found = problems(tmp_path, text, provider_types)
    assert any("call.trunk: no [trunk.carrier] section" in p for p in found)
    assert any("storage: missing [storage] section" in p for p in found)


def test_toml_syntax_error(tmp_path: Path, provider_types: dict) -> None:
    (found,) = problems(tmp_path, "[daemon\n", provider_types)
    assert found.startswith(str(tmp_path / "waihud.toml"))


def test_waihud_check_config_exit_codes(tmp_path: Path) -> None:
    """The command line: 0 and OK for a good file, 78 (EX_CONFIG) and the key for a bad one."""
    good = write(tmp_path, MINIMAL + f'\n[daemon]\nscripts_dir = "{tmp_path}/none"\n')
    run = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "\n[media]\njitter_depth = -1\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 78
    assert f"{bad}: media.jitter_depth: must be greater than 0" in run.stderr
