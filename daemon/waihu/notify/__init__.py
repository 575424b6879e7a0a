"""Hot-lead notifications: what to tell (``leads``) and the durable delivery (``outbox``).

The core decides which finished calls are leads by the campaign's rules,
commits each notification to the campaign store's outbox, and one
``OutboxDelivery`` task per configured notifier (``[notify.NAME]``) hands
them to the notifier plugin, retrying until they are delivered.

What it is not: a notifier. The WeChat Work robot, the generic webhook and
third-party notifiers are plugins implementing ``waihu.api.Notifier``.
"""

from __future__ import annotations

from .leads import (
    NotifyRule,
    digest_notification,
    lead_from_call,
    lead_notification,
    lead_notifications,
    mask_number,
    matching_calls,
    notification_from_json,
    notification_to_json,
)
from .outbox import OutboxDelivery, retry_delay

__all__ = [
    "NotifyRule",
    "OutboxDelivery",
    "digest_notification",
    "lead_from_call",
    "lead_notification",
    "lead_notifications",
    "mask_number",
    "matching_calls",
    "notification_from_json",
    "notification_to_json",
    "retry_delay",
]
