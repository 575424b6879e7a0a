"""Finding plugins and the provider classes they register.

Built-in and third-party plugins are found the same way: through the
``waihu`` entry-point group. ``WAIHU_DISABLE_PLUGINS`` (comma-separated
entry-point names) blocks some, e.g. to replace a built-in with another
distribution's plugin of the same type name.

Registration checks every class against its kind's row of
``waihu.providers.PROVIDER_KINDS``: it needs a ``type_name``, an attrs
``Config``, a name no other plugin took for that kind, and every method of
the kind's protocol; otherwise the plugin is refused with a ``PluginError``
naming the plugin, the class and what is missing.

Error handling: a plugin whose module cannot be imported (a missing
dependency, a syntax error in a third-party package) is a ``PluginError``
naming its entry point and how to block it, not a traceback from deep in
pluggy. A hook that matches no spec is pluggy's ``PluginValidationError``.

What it is not: the code that constructs or runs providers (``waihu.providers``).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from waihu import hookspecs
from waihu.api import PROJECT_NAME, Provider, WaihuError
from waihu.providers import PROVIDER_KINDS, ProviderKind, protocol_methods

__all__ = [
    "PluginError",
    "collect_provider_types",
    "make_plugin_manager",
    "plugin_info",
]

DISABLE_ENV = "WAIHU_DISABLE_PLUGINS"


class PluginError(WaihuError):
    """A plugin registered something unusable (duplicate or missing type name…)."""


def make_plugin_manager(
    *, entry_points: bool = True, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A fresh plugin manager with every installed plugin loaded.

    ``extra`` registers plugin objects directly (tests use it). Hook
    implementations that match no spec are an error at once.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    if entry_points:
        # one at a time, so that a plugin that cannot be imported is named
        for entry_point in importlib.metadata.entry_points(group=PROJECT_NAME):
            try:
                pm.load_setuptools_entrypoints(PROJECT_NAME, name=entry_point.name)
            except Exception as exc:  # whatever importing someone else's module raises
                raise PluginError(
                    f"plugin {entry_point.name} ({entry_point.value}) cannot be loaded:"
                    f" {type(exc).__name__}: {exc}; reinstall it, or block it with"
                    f" {DISABLE_ENV}={entry_point.name}"
                ) from exc
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def collect_provider_types(pm: pluggy.PluginManager) -> dict[str, dict[str, type[Provider]]]:
    """Every provider class by kind and type name, for every kind of ``PROVIDER_KINDS``.

    Raises PluginError for a class without ``type_name`` or attrs ``Config``,
    a type name two plugins registered, or a class missing a method of its
    kind's protocol.
    """
    registry: dict[str, dict[str, type[Provider]]] = {}
    for kind in PROVIDER_KINDS:
        by_name: dict[str, type[Provider]] = {}
        origin: dict[str, str] = {}
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            for cls in impl.function() or ():
                type_name = _check_class(kind, cls, plugin_name)
                if type_name in by_name:
                    raise PluginError(
                        f"{kind.name} type {type_name!r} is registered by both"
                        f" {origin[type_name]} and {plugin_name}; block one with {DISABLE_ENV}"
                    )
                _check_protocol(kind, cls, type_name, plugin_name)
                by_name[type_name] = cls
                origin[type_name] = plugin_name
        registry[kind.name] = by_name
    return registry


def _check_class(kind: ProviderKind, cls: Any, plugin_name: str) -> str:
    """``cls``'s type name, once it is known to carry one and an attrs Config."""
    type_name = getattr(cls, "type_name", None)
    if not isinstance(type_name, str) or not type_name:
        raise PluginError(f"plugin {plugin_name}: {kind.name} class {cls!r} has no type_name")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and attrs.has(config)):
        raise PluginError(
            f"plugin {plugin_name}: {kind.name} type {type_name!r} has no attrs Config class"
        )
    return type_name


def _check_protocol(kind: ProviderKind, cls: Any, type_name: str, plugin_name: str) -> None:
    missing = [m for m in protocol_methods(kind.protocol) if not callable(getattr(cls, m, None))]
    if missing:
        raise PluginError(
            f"plugin {plugin_name}: {kind.name} type {type_name!r} ({cls.__qualname__})"
            f" lacks {', '.join(missing)} of waihu.api.{kind.protocol.__name__}"
        )


def plugin_info(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, distribution, version and hooks of every registered plugin, sorted by name."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist: importlib.metadata.Distribution | None = dists.get(id(plugin))
        rows.append(
            {
                "name": name,
                "distribution": dist.metadata["name"] if dist else None,
                "version": dist.version if dist else None,
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or ()),
            }
        )
    return sorted(rows, key=lambda r: r["name"])
