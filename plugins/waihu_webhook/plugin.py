"""Entry point of the built-in ``webhook`` notifier plugin (``[notify.NAME] type = "webhook"``).

What it is not: the notifier itself, which lives in ``waihu_webhook.webhook``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl

from .webhook import WebhookNotifier

__all__ = ["waihu_notifier_types"]


@hookimpl
def waihu_notifier_types() -> list[type[Provider]]:
    """Register ``WebhookNotifier`` under the type name ``webhook``."""
    return [WebhookNotifier]
