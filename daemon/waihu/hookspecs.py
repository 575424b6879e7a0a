"""Every hook waihu calls, one docstring each.

Hooks are synchronous and short: they register provider classes or observe
events. Long-lived work belongs to a provider's ``run`` method, which the core
starts in its nursery. A plugin implements any subset with ``waihu.api.hookimpl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from waihu.api import PROJECT_NAME

if TYPE_CHECKING:
    from waihu.api import CallEvent, Provider

__all__ = [
    "hookspec",
    "waihu_asr_types",
    "waihu_call_event",
    "waihu_nlu_types",
    "waihu_notifier_types",
    "waihu_storage_types",
    "waihu_trunk_types",
    "waihu_tts_types",
    "waihu_vad_types",
]

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# ───────────────────────── start-up: provider kinds ─────────────────────────
# Called once when the plugin manager is built. Each returns a list of Provider
# subclasses, each carrying its ``type_name`` and attrs ``Config``; the core
# collects them into a registry that refuses a duplicate name, and a config
# section picks one with ``type = "..."``.


@hookspec
def waihu_trunk_types() -> list[type[Provider]]:
    """Trunk classes (``waihu.api.Trunk``): ways to place calls, such as SIP.

    Used by ``[trunk.NAME]`` sections.
    """


@hookspec
def waihu_asr_types() -> list[type[Provider]]:
    """Speech recogniser classes (``waihu.api.AsrEngine``). Used by ``[asr.NAME]``."""


@hookspec
def waihu_vad_types() -> list[type[Provider]]:
    """Voice activity detector classes (``waihu.api.Vad``). Used by ``[vad.NAME]``."""


@hookspec
def waihu_nlu_types() -> list[type[Provider]]:
    """Intent classifier classes (``waihu.api.Classifier``). Used by ``[nlu.NAME]``."""


@hookspec
def waihu_tts_types() -> list[type[Provider]]:
    """Speech synthesiser classes (``waihu.api.Synthesizer``). Used by ``[tts.NAME]``."""


@hookspec
def waihu_storage_types() -> list[type[Provider]]:
    """Storage backend classes (``waihu.api.Storage``). Used by ``[storage]``."""


@hookspec
def waihu_notifier_types() -> list[type[Provider]]:
    """Notifier classes (``waihu.api.Notifier``). Used by ``[notify.NAME]``."""


# ───────────────────────── running: observers ─────────────────────────


@hookspec
def waihu_call_event(event: CallEvent) -> None:
    """Observe one call or campaign event as it happens.

    Called on the trio thread for every event of every call, in order, and for
    every campaign state change (``call_id`` None). ``event.kind`` is one of
    ``waihu.api.EVENT_KINDS`` and ``event.data`` holds exactly the fields that
    table lists for it; ``event.campaign`` names the call's campaign (None for
    a single call). It must return quickly and never block: hand slow work to a
    task or a channel of your own. An exception is logged with the plugin's
    name and otherwise ignored; it never affects the call.
    """
