"""A minimal third-party waihu plugin: the ``jsonl`` notifier.

It shows everything a plugin author needs: an entry point in the ``waihu``
group, a hook implementation returning a provider class, and an attrs Config
validated by the core. Configure it with::

    [notify.audit]
    type = "jsonl"
    path = "/var/lib/waihu/events.jsonl"
    kinds = ["ended", "failed"]     # empty: every event

Writes happen in a worker thread so the daemon's trio thread never blocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import trio

from waihu.api import CallEvent, Provider, hookimpl


class JsonlNotifier(Provider):
    """Appends each chosen call event as one JSON line."""

    type_name = "jsonl"

    @attrs.frozen(kw_only=True)
    class Config:
        path: str
        kinds: list[str] = attrs.Factory(list)

    async def notify(self, event: CallEvent) -> None:
        if self.config.kinds and event.kind not in self.config.kinds:
            return
        line = json.dumps(
            {"call_id": event.call_id, "kind": event.kind, "at": event.at, **event.data},
            ensure_ascii=False,
        )
        path = self.context.state_dir / Path(self.config.path)
        await trio.to_thread.run_sync(_append, path, line)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


@hookimpl
def waihu_notifier_types() -> list[type[Provider]]:
    return [JsonlNotifier]
