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

    # the daemon validates its table and starts it like any notifier
    with trio.fail_after(120):
        config = write_config(
            tmp_path / "waihud", proxy="127.0.0.1:5999",
            extra='[notify.audit]\ntype = "jsonl"\npath = "leads.jsonl"\nkinds = ["lead"]\n',
        )  # fmt: skip
        async with running_waihud(config, env=env) as daemon:
            plugins = {p["name"] for p in await daemon.request("plugins")}
            assert "jsonl" in plugins
            assert await daemon.stop() == 0
    assert "starting notify.audit" in daemon.log.read_text(encoding="utf-8")

    # and it writes what the outbox hands it: the class found through the registry, as the
    # core finds it, delivers a lead (one JSON line) and skips the digest its kinds leave out
    deliver = """if True:
        import logging, sys
        from pathlib import Path
        import trio
        from waihu.api import Notification, ProviderContext
        from waihu.config import structure_strict
        from waihu.plugins import collect_provider_types, make_plugin_manager
        cls = collect_provider_types(make_plugin_manager())["notify"]["jsonl"]
        table = {"path": "leads.jsonl", "kinds": ["lead"]}
        config = structure_strict(cls.Config, table, file="waihud.toml", key="notify.audit")
        context = ProviderContext(
            "audit", Path(sys.argv[1]), logging.getLogger("jsonl"), trio.CapacityLimiter(1)
        )
        notifier = cls(config, context)
        def note(kind):
            call = {"call_id": "c1", "masked_number": "138****8000", "grade": "A"}
            return Notification(id=f"{kind}-c1-audit", kind=kind, campaign_id="may",
                                campaign_name="五月回访", calls=(call,), created_at=1.5)
        async def main():
            await notifier.deliver(note("lead"))
            await notifier.deliver(note("digest"))
        trio.run(main)
    """
    subprocess.run(
        [sys.executable, "-c", deliver, str(tmp_path)],
        check=True, env={**os.environ, **env}, timeout=60,
    )  # fmt: skip
    lines = (tmp_path / "leads.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "id": "lead-c1-audit",
            "kind": "lead",
            "campaign_id": "may",
            "campaign_name": "五月回访",
            "calls": [{"call_id": "c1", "masked_number": "138****8000", "grade": "A"}],
            "created_at": 1.5,
        }
    ]
