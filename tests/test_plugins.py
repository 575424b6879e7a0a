"""The plugin manager: entry points, the provider registry, and a real third-party plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from waihu.api import Provider, hookimpl
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager, plugin_info
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import sipp_peer

from conftest import REPO


def test_built_in_plugins_are_found_through_entry_points() -> None:
    pm = make_plugin_manager()
    rows = {row["name"]: row for row in plugin_info(pm)}
    assert {"sip", "vosk", "nlu", "sqlite"} <= set(rows)
    assert rows["sip"]["distribution"] == "waihu"
    assert rows["sip"]["version"]
    assert rows["sip"]["hooks"] == ["waihu_trunk_types"]
    types = collect_provider_types(pm)
    assert set(types["trunk"]) == {"sip"} and set(types["storage"]) == {"sqlite"}


def test_blocking_a_plugin_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAIHU_DISABLE_PLUGINS", "sqlite, nlu")
    types = collect_provider_types(make_plugin_manager())
    assert types["storage"] == {} and types["nlu"] == {}
    assert "sip" in types["trunk"]


class _Second(Provider):
    type_name = "sip"

    @attrs.frozen
    class Config:
        pass


class _Nameless(Provider):
    @attrs.frozen
    class Config:
        pass


class _Duplicate:
    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [_Second]


class _NoName:
    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [_Nameless]


class _Typo:
    @hookimpl
    def waihu_trunk_typez(self) -> list[type[Provider]]:
        return []


def test_duplicate_type_name_is_refused() -> None:
    pm = make_plugin_manager(extra=[_Duplicate()])
    with pytest.raises(PluginError, match="trunk type 'sip' is registered by both"):
        collect_provider_types(pm)


def test_nameless_provider_is_refused() -> None:
    pm = make_plugin_manager(entry_points=False, extra=[_NoName()])
    with pytest.raises(PluginError, match="has no type_name"):
        collect_provider_types(pm)


def test_misspelt_hook_fails_fast() -> None:
    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="waihu_trunk_typez"):
        make_plugin_manager(entry_points=False, extra=[_Typo()])


@pytest.fixture(scope="module")
def jsonl_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """contrib/waihu-jsonl installed the way a user would (pip), into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "contrib" / "waihu-jsonl")],
        check=True, timeout=300, env={**os.environ, "TMPDIR": str(build)},
    )  # fmt: skip
    return target


async def test_third_party_plugin_is_listed_and_used(tmp_path: Path, jsonl_plugin: Path) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(jsonl_plugin), os.environ.get("PYTHONPATH")])
        )
    }
    listed = subprocess.run(
        [sys.executable, "-c", "import json, waihu.plugins as p;"
         "print(json.dumps(p.plugin_info(p.make_plugin_manager())))"],
        capture_output=True, text=True, check=True, env={**os.environ, **env}, timeout=60,
    )  # fmt: skip
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["jsonl"]["distribution"] == "waihu-jsonl"
    assert rows["jsonl"]["hooks"] == ["waihu_notifier_types"]

    with trio.fail_after(120):
        async with sipp_peer("busy.xml", tmp_path) as peer:
            config = write_config(
                tmp_path / "waihud", proxy=peer.hostport,
                extra='[notify.audit]\ntype = "jsonl"\npath = "events.jsonl"\n'
                      'kinds = ["dialing", "failed"]\n',
            )  # fmt: skip
            async with running_waihud(config, env=env) as daemon:
                plugins = {p["name"] for p in await daemon.request("plugins")}
                assert "jsonl" in plugins
                call = await daemon.request("call", target="callee", script="demo-ko")
                await daemon.wait_call(call["call_id"])
                events_file = daemon.directory / "state" / "events.jsonl"
                with trio.fail_after(10):
                    while not events_file.exists() or events_file.read_text().count("\n") < 2:
                        await trio.sleep(0.05)
                assert await daemon.stop() == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["call_id"], e["kind"]) for e in events] == [
        (call["call_id"], "dialing"),
        (call["call_id"], "failed"),
    ]
    assert events[1]["sip_status"] == 486
