"""Registers the SIP trunk with waihu (entry point ``sip = "waihu_sip.plugin"``).

Not for: anything but registration; the trunk lives in ``trunk``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_sip.trunk import SipTrunk

__all__ = ["waihu_trunk_types"]


@hookimpl
def waihu_trunk_types() -> list[type[Provider]]:
    """The SIP trunk, ``type = "sip"``."""
    return [SipTrunk]
