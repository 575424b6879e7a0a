"""The provider-kind table, protocol checks at registration, and ``Providers``.

Providers here register through the real hooks of a real plugin manager. The
storage is the real SQLite one (subclassed only to note when it starts); the
trunk, speech recogniser and notifier are small stand-ins with every method
of their protocol, because a real SIP trunk or vosk model is not what these
tests are about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import trio

from waihu import hookspecs
from waihu.api import CallLeg, Notification, Provider, hookimpl
from waihu.config import load_config
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager
from waihu.providers import KINDS_BY_NAME, PROVIDER_KINDS, Providers, protocol_methods
from waihu_sqlite.storage import SqliteStorage

TIMEOUT = 10


class Started:
    """The order in which providers became ready, as (kind, name)."""

    order: ClassVar[list[tuple[str, str]]] = []


class _Noting(Provider):
    kind: ClassVar[str]

    @attrs.frozen
    class Config:
        pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        Started.order.append((self.kind, self.context.name))
        task_status.started()
        await trio.sleep_forever()


class NotingStorage(SqliteStorage):
    """The real SQLite storage, noting when it starts."""

    type_name: ClassVar[str] = "noting-sqlite"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        Started.order.append(("storage", self.context.name))
        await super().run(task_status=task_status)


class StandInTrunk(_Noting):
    type_name = "stand-in"
    kind = "trunk"

    async def dial(self, target: str, **_: Any) -> CallLeg:
        raise NotImplementedError


class StandInAsr(_Noting):
    type_name = "stand-in"
    kind = "asr"

    def open_stream(self, *, sample_rate: int) -> Any:
        raise NotImplementedError


class StandInNotifier(_Noting):
    type_name = "stand-in"
    kind = "notify"

    async def deliver(self, notification: Notification) -> None:
        pass


class StandIns:
    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [StandInTrunk]

    @hookimpl
    def waihu_asr_types(self) -> list[type[Provider]]:
        return [StandInAsr]

    @hookimpl
    def waihu_notifier_types(self) -> list[type[Provider]]:
        return [StandInNotifier]

    @hookimpl
    def waihu_storage_types(self) -> list[type[Provider]]:
        return [NotingStorage]


CONFIG = """
[trunk.office]
type = "stand-in"
[trunk.branch]
type = "stand-in"
[notify.sales]
type = "stand-in"
[asr.default]
type = "stand-in"
[nlu.default]
type = "keywords"
[storage]
type = "noting-sqlite"
path = "calls.db"
"""


# ───────────────────────── the table ─────────────────────────


def test_every_types_hook_has_exactly_one_kind() -> None:
    type_hooks = {name for name in hookspecs.__all__ if name.endswith("_types")}
    assert sorted(kind.hook for kind in PROVIDER_KINDS) == sorted(type_hooks)
    assert KINDS_BY_NAME["storage"].singleton
    assert [k.name for k in PROVIDER_KINDS if k.singleton] == ["storage"]
    assert KINDS_BY_NAME["nlu"].start_order is None  # built per script, never started


def test_protocol_methods_are_the_declared_ones() -> None:
    assert protocol_methods(KINDS_BY_NAME["trunk"].protocol) == ("dial", "run")
    assert protocol_methods(KINDS_BY_NAME["notify"].protocol) == ("deliver", "run")
    assert protocol_methods(KINDS_BY_NAME["nlu"].protocol) == ("classify", "fit")
    assert {"save_call", "unfinished_calls", "set_alive", "last_alive"} <= set(
        protocol_methods(KINDS_BY_NAME["storage"].protocol)
    )


# ───────────────────────── registration ─────────────────────────


class HalfTrunk(Provider):
    """A trunk class that forgot ``dial``."""

    type_name = "half"

    @attrs.frozen
    class Config:
        pass


class HalfNotifier(Provider):
    """A notifier written for the old interface (``notify`` instead of ``deliver``)."""

    type_name = "old"

    @attrs.frozen
    class Config:
        pass

    async def notify(self, event: Any) -> None:
        pass


class Incomplete:
    def __init__(self, trunks: list[type] = (), notifiers: list[type] = ()) -> None:
        self.trunks, self.notifiers = list(trunks), list(notifiers)

    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return self.trunks

    @hookimpl
    def waihu_notifier_types(self) -> list[type[Provider]]:
        return self.notifiers


def test_a_class_missing_a_protocol_method_is_refused_naming_plugin_and_method() -> None:
    plugin = Incomplete(trunks=[HalfTrunk])
    pm = make_plugin_manager(entry_points=False, extra=[plugin])
    name = pm.get_name(plugin)
    with pytest.raises(PluginError) as refused:
        collect_provider_types(pm)
    assert str(refused.value) == (
        f"plugin {name}: trunk type 'half' (HalfTrunk) lacks dial of waihu.api.Trunk"
    )


def test_a_notifier_of_the_old_interface_is_refused() -> None:
    pm = make_plugin_manager(entry_points=False, extra=[Incomplete(notifiers=[HalfNotifier])])
    with pytest.raises(PluginError, match=r"notify type 'old' .* lacks deliver of .*Notifier"):
        collect_provider_types(pm)


def test_complete_classes_are_registered_under_every_kind() -> None:
    types = collect_provider_types(make_plugin_manager(extra=[StandIns()]))
    assert set(types) == set(KINDS_BY_NAME)
    assert types["trunk"]["stand-in"] is StandInTrunk
    assert types["storage"]["noting-sqlite"] is NotingStorage
    assert types["nlu"]["keywords"].type_name == "keywords"  # the built-in, through its entry


# ───────────────────────── Providers ─────────────────────────


@pytest.fixture
def providers(tmp_path: Path) -> Providers:
    path = tmp_path / "waihud.toml"
    path.write_text(CONFIG, encoding="utf-8")
    types = collect_provider_types(make_plugin_manager(extra=[StandIns()]))
    config = load_config(path, types)
    Started.order = []
    return Providers(config, types, state_dir=tmp_path, cpu_limiter=trio.CapacityLimiter(1))


async def test_providers_start_in_table_order_and_are_found_by_name(
    providers: Providers, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            assert providers.get("trunk", "office") is None  # nothing before it started
            await providers.start_all(nursery)
            assert Started.order == [
                ("storage", "storage"),
                ("asr", "default"),
                ("trunk", "office"),
                ("trunk", "branch"),
                ("notify", "sales"),
            ]
            office = providers.get("trunk", "office")
            assert isinstance(office, StandInTrunk) and office.context.name == "office"
            assert office.context.log.name == "waihu.trunk.office"
            assert list(providers.started("trunk")) == ["office", "branch"]
            assert providers.started("nlu") == {}  # never started
            assert providers.get("trunk", "nowhere") is None
            assert isinstance(providers.storage, NotingStorage)
            assert providers.storage.path == tmp_path / "calls.db"
            nursery.cancel_scope.cancel()


def test_classifiers_are_built_fresh_each_time(providers: Providers) -> None:
    first, second = providers.build("nlu", "default"), providers.build("nlu", "default")
    assert first is not second and type(first).type_name == "keywords"
    with pytest.raises(LookupError, match=r"no \[nlu.other\] section"):
        providers.build("nlu", "other")


def test_storage_before_start_is_a_lookup_error(providers: Providers) -> None:
    with pytest.raises(LookupError, match="storage has not been started"):
        _ = providers.storage
