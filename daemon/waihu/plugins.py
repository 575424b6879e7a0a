"""Finding plugins and the provider classes they register.

Built-in and third-party plugins are found the same way: through the
``waihu`` entry-point group. ``WAIHU_DISABLE_PLUGINS`` (comma-separated
entry-point names) blocks some, e.g. to replace a built-in with another
distribution's plugin of the same type name.

What it is not: the code that constructs or runs providers (``waihu.daemon``).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any

import pluggy

from waihu import hookspecs
from waihu.api import PROJECT_NAME, Provider, WaihuError

__all__ = [
    "KIND_HOOKS",
    "PluginError",
    "collect_provider_types",
    "make_plugin_manager",
    "plugin_info",
]

DISABLE_ENV = "WAIHU_DISABLE_PLUGINS"

# config kind → hook that registers classes of that kind
KIND_HOOKS = {
    "trunk": "waihu_trunk_types",
    "asr": "waihu_asr_types",
    "nlu": "waihu_nlu_types",
    "storage": "waihu_storage_types",
    "notify": "waihu_notifier_types",
}


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
        pm.load_setuptools_entrypoints(PROJECT_NAME)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def collect_provider_types(pm: pluggy.PluginManager) -> dict[str, dict[str, type[Provider]]]:
    """Every provider class by kind and type name; refuses duplicates and nameless classes."""
    registry: dict[str, dict[str, type[Provider]]] = {}
    for kind, hook_name in KIND_HOOKS.items():
        by_name: dict[str, type[Provider]] = {}
        origin: dict[str, str] = {}
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            for cls in impl.function() or ():
                type_name = getattr(cls, "type_name", None)
                if not isinstance(type_name, str) or not type_name:
                    raise PluginError(
                        f"plugin {plugin_name}: {kind} class {cls!r} has no type_name"
                    )
                if not attrs_class(getattr(cls, "Config", None)):
                    raise PluginError(
                        f"plugin {plugin_name}: {kind} type {type_name!r} has no attrs Config class"
                    )
                if type_name in by_name:
                    raise PluginError(
                        f"{kind} type {type_name!r} is registered by both {origin[type_name]}"
                        f" and {plugin_name}; block one with {DISABLE_ENV}"
                    )
                by_name[type_name] = cls
                origin[type_name] = plugin_name
        registry[kind] = by_name
    return registry


def attrs_class(cls: Any) -> bool:
    import attrs

    return isinstance(cls, type) and attrs.has(cls)


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
