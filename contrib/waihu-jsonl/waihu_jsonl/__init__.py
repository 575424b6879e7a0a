"""A minimal third-party waihu plugin: the ``jsonl`` notifier.

It shows everything a plugin author needs: an entry point in the ``waihu``
group, a hook implementation returning a provider class, an attrs Config
validated by the core (with a validator from ``waihu.api``), and the
``Notifier`` protocol's ``deliver``. Configure it with::

    [notify.audit]
    type = "jsonl"
    path = "/var/lib/waihu/leads.jsonl"   # relative: under the daemon's state_dir
    kinds = ["lead"]                      # "lead", "digest"; empty: both

Each notification the core hands it (a hot lead as a call ends, a campaign's
digest at its end) is appended as one JSON line: ``id``, ``kind``,
``campaign_id``, ``campaign_name``, ``calls`` and ``created_at``. The core
keeps notifications in a durable outbox and retries a failed ``deliver``, so
an error writing the file (disk full) is raised as ``DeliveryFailed`` and the
line is written later. A notification may be delivered more than once (after
a crash between the write and the outbox's bookkeeping): readers should drop
repeated ``id``s.

Writes happen in a worker thread so the daemon's trio thread never blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from waihu.api import DeliveryFailed, Notification, Provider, check, hookimpl

NOTIFICATION_KINDS = ("lead", "digest")


class JsonlNotifier(Provider):
    """Appends each chosen notification as one JSON line."""

    type_name = "jsonl"

    @attrs.frozen(kw_only=True)
    class Config:
        path: str
        kinds: list[str] = attrs.field(
            factory=list,
            validator=check(
                lambda v: set(v) <= set(NOTIFICATION_KINDS),
                "must list lead and/or digest, not {value!r}",
            ),
        )

    async def deliver(self, notification: Notification) -> None:
        """Append the notification as one JSON line (unless its kind is not wanted)."""
        if self.config.kinds and notification.kind not in self.config.kinds:
            return
        line = json.dumps(attrs.asdict(notification), ensure_ascii=False, default=_plain)
        path = self.context.state_dir / Path(self.config.path)
        try:
            await trio.to_thread.run_sync(_append, path, line)
        except OSError as exc:
            raise DeliveryFailed(f"cannot append to {path}: {exc.strerror}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):  # the calls are read-only mappings, not always dicts
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


@hookimpl
def waihu_notifier_types() -> list[type[Provider]]:
    return [JsonlNotifier]
