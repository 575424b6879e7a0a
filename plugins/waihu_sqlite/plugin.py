"""Entry point of the built-in ``sqlite`` storage plugin (``[storage] type = "sqlite"``).

What it is not: the storage itself, which lives in ``waihu_sqlite.storage``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl

from .storage import SqliteStorage

__all__ = ["waihu_storage_types"]


@hookimpl
def waihu_storage_types() -> list[type[Provider]]:
    """Register ``SqliteStorage`` under the type name ``sqlite``."""
    return [SqliteStorage]
