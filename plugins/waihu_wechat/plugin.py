"""Entry point of the built-in ``wechat`` notifier plugin (``[notify.NAME] type = "wechat"``).

What it is not: the notifier itself, which lives in ``waihu_wechat.robot``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl

from .robot import WeChatWorkRobot

__all__ = ["waihu_notifier_types"]


@hookimpl
def waihu_notifier_types() -> list[type[Provider]]:
    """Register ``WeChatWorkRobot`` under the type name ``wechat``."""
    return [WeChatWorkRobot]
