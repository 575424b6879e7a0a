"""Config loading: strict types, unknown keys, provider tables, messages naming file and key."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pluggy
import pytest

from waihu.config import CORE_SECTIONS, ConfigError, load_config
from waihu.daemon import check
from waihu.providers import PROVIDER_KINDS, TrunkLimits

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


def test_unknown_top_level_section_is_refused(tmp_path: Path, provider_types: dict) -> None:
    (found,) = problems(tmp_path, MINIMAL + '\n[trunks.office]\ntype = "sip"\n', provider_types)
    assert found.startswith(f"{tmp_path / 'waihud.toml'}: trunks: unknown section (sections: ")
    assert "trunk" in found and "campaign" in found


def test_a_singleton_kind_is_one_table_and_named_kinds_are_tables_of_tables(
    tmp_path: Path, provider_types: dict
) -> None:
    config = load_config(write(tmp_path, MINIMAL), provider_types)
    (storage,) = config.sections("storage")
    assert (storage.name, storage.key, storage.config.path) == ("storage", "storage", "waihu.db")
    assert config.section("trunk", "office").key == "trunk.office"
    assert config.section("trunk", "home") is None
    flat = MINIMAL.replace("[asr.default]", "[asr]")  # read as an instance named "type"
    found = problems(tmp_path, flat, provider_types)
    assert [p.removeprefix(f"{tmp_path / 'waihud.toml'}: ") for p in found] == [
        "asr.type: must be a table, not a string",
        "call.asr: no [asr.default] section",
    ]


def test_trunk_lines_and_pace_are_core_keys_the_plugin_never_sees(
    tmp_path: Path, provider_types: dict
) -> None:
    text = MINIMAL.replace(
        'proxy = "127.0.0.1:5080"', 'proxy = "127.0.0.1:5080"\nlines = 30\ncalls_per_minute = 60'
    )
    text += '\n[trunk.spare]\ntype = "sip"\nproxy = "127.0.0.1:5090"\n[daemon]\nmax_calls = 40\n'
    config = load_config(write(tmp_path, text), provider_types)
    assert config.trunk_limits("office") == TrunkLimits(lines=30, calls_per_minute=60.0)
    assert config.trunk_limits("spare") == TrunkLimits(lines=40, calls_per_minute=600.0)
    assert not hasattr(config.section("trunk", "office").config, "lines")
    with pytest.raises(LookupError):
        config.trunk_limits("nowhere")


def test_bad_trunk_limits_name_their_key_with_the_plugins_own_problems(
    tmp_path: Path, provider_types: dict
) -> None:
    text = MINIMAL.replace(
        'proxy = "127.0.0.1:5080"', 'proxy = "127.0.0.1:5080"\nlines = 0\nprot = 1'
    )
    found = problems(tmp_path, text, provider_types)
    assert any(p.endswith("trunk.office.lines: must be greater than 0, not 0") for p in found)
    assert any("trunk.office" in p and "unknown key prot" in p for p in found)
    assert len(found) == 2


def test_daemon_node_groups_and_campaign_defaults(tmp_path: Path, provider_types: dict) -> None:
    config = load_config(write(tmp_path, MINIMAL), provider_types)
    assert config.daemon.node == socket.gethostname()
    assert (config.daemon.control_group, config.daemon.control_admin_group) == (None, None)
    assert config.campaign.default_region == "CN"
    assert config.campaign.frequency_cap_hours == 24.0
    text = MINIMAL + (
        '\n[daemon]\nnode = "waihu-2"\ncontrol_group = "waihu"\ncontrol_admin_group = "ops"\n'
        '[campaign]\ndefault_region = "KR"\nfrequency_cap_hours = 0\n'
    )
    config = load_config(write(tmp_path, text), provider_types)
    assert (config.daemon.node, config.daemon.control_group) == ("waihu-2", "waihu")
    assert config.daemon.control_admin_group == "ops"
    assert (config.campaign.default_region, config.campaign.frequency_cap_hours) == ("KR", 0.0)


def test_bad_campaign_and_daemon_values_name_their_keys(
    tmp_path: Path, provider_types: dict
) -> None:
    def found(text: str) -> list[str]:
        return sorted(
            p.removeprefix(f"{tmp_path / 'waihud.toml'}: ")
            for p in problems(tmp_path, MINIMAL + text, provider_types)
        )

    assert found('\n[daemon]\nnode = " "\n[campaign]\ndefault_region = "XX"\n') == [
        "campaign.default_region: must be a region code such as CN, KR or US, not 'XX'",
        "daemon.node: must not be empty",
    ]
    assert found("\n[campaign]\nfrequency_cap_hours = -1\n") == [
        "campaign.frequency_cap_hours: must be at least 0.0, not -1.0"
    ]


def test_every_key_is_documented_in_the_sample_and_the_man_page() -> None:
    sample = (REPO / "etc/waihu/waihud.toml").read_text(encoding="utf-8")
    man = (REPO / "man/waihud.toml.5").read_text(encoding="utf-8").replace("\\_", "_")
    tables = {name: cls for name, cls in CORE_SECTIONS.items()}
    tables |= {k.name: k.core_keys for k in PROVIDER_KINDS if k.core_keys is not None}
    for table, cls in tables.items():
        for field in attrs.fields(cls):
            assert re.search(rf"^#?{field.name} = ", sample, re.M), f"{table}.{field.name}"
            assert re.search(rf"\b{field.name}\b", man), f"{table}.{field.name} in the man page"
        assert f"[{table}" in man, table


def test_toml_syntax_error(tmp_path: Path, provider_types: dict) -> None:
    (found,) = problems(tmp_path, "[daemon\n", provider_types)
    assert found.startswith(str(tmp_path / "waihud.toml"))


def test_waihud_check_config_exit_codes(tmp_path: Path) -> None:
    """The command line: 0 and OK for a good file, 78 (EX_CONFIG) and the key for a bad one."""
    (tmp_path / "scripts").mkdir()
    good = write(
        tmp_path,
        MINIMAL + f'\n[daemon]\nscripts_dir = "{tmp_path}/scripts"\nstate_dir = "{tmp_path}"\n'
        f'control_socket = "{tmp_path}/control.sock"\n',
    )
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


def test_tts_is_off_unless_call_names_a_tts_section(tmp_path: Path, provider_types: dict) -> None:
    assert load_config(write(tmp_path, MINIMAL), provider_types).call.tts is None
    with_tts = MINIMAL + '\n[tts.voice]\ntype = "espeak"\n\n[call]\ntts = "voice"\n'
    config = load_config(write(tmp_path, with_tts), provider_types)
    assert config.call.tts == "voice"
    assert config.section("tts", "voice").config.voices == {}


def test_a_tts_name_without_its_section_is_an_error_naming_the_key(
    tmp_path: Path, provider_types: dict
) -> None:
    found = problems(tmp_path, MINIMAL + '\n[call]\ntts = "voice"\n', provider_types)
    assert [p.removeprefix(f"{tmp_path / 'waihud.toml'}: ") for p in found] == [
        "call.tts: no [tts.voice] section"
    ]
    (blank,) = problems(tmp_path, MINIMAL + '\n[call]\ntts = " "\n', provider_types)
    assert blank.endswith("call.tts: must not be empty")


def test_the_shipped_config_speaks_by_espeak(provider_types: dict) -> None:
    config = load_config(REPO / "etc/waihu/waihud.toml", provider_types)
    assert config.call.tts == "default"
    assert config.section("tts", "default").type == "espeak"


def test_check_config_refuses_a_script_needing_tts_when_none_is_configured(
    tmp_path: Path, pm: pluggy.PluginManager
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "offer.toml").write_text(
        '[script]\nlanguage = "zh"\nstart = "hi"\n\n'
        '[nodes.hi]\nsay = [{ text = "您好{name}" }]\nend = true\n',
        encoding="utf-8",
    )
    daemon = f'\n[daemon]\nscripts_dir = "{scripts}"\n'
    with pytest.raises(ConfigError) as info:
        check(write(tmp_path, MINIMAL + daemon), pm)
    assert info.value.problems == [
        f"{scripts / 'offer.toml'}: nodes.hi.say[0]: no recording and no [call] tts to speak it"
    ]
    with_tts = MINIMAL + daemon + '\n[call]\ntts = "voice"\n\n[tts.voice]\ntype = "espeak"\n'
    assert check(write(tmp_path, with_tts), pm).call.tts == "voice"
