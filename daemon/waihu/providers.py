"""Provider kinds, in one table, and the daemon's providers built from config.

``PROVIDER_KINDS`` is the one place a kind of provider is described: its
config section, the hook that registers its classes, the ``waihu.api``
protocol its classes follow, whether config has one ``[storage]`` table or
named ``[trunk.NAME]`` tables, the order in which the daemon starts its
instances, and the core keys of its tables. The plugin registry
(``waihu.plugins``), config loading (``waihu.config``) and ``Providers``
below all read it: a new kind is one more row.

``Providers`` builds provider objects from a validated ``Config`` (one
``ProviderContext`` recipe for all of them), starts the long-lived ones in
table order in the daemon's nursery, and hands out the started instances
(``get``, ``started``, ``storage``). Trunks are built with an ``incoming``
handler when ``[inbound]`` gives some number a script: it passes each inbound
call to whoever ``take_inbound_calls`` named (the dispatcher, once it runs);
before that, or with nobody named, the handler raises and the trunk refuses
the call itself. Classifiers (``nlu``) are built fresh
for every script that is loaded and never started.

``check_providers`` asks the class of every configured provider what would
stop it from starting (``Provider.check``), before anything is built: both
``waihud --check-config`` and start-up call it.

Error handling: a provider whose ``run`` raises a ``WaihuError`` or an
``OSError`` (a port in use, a file it may not open) before it is ready stops
start-up with a ``ProviderError`` naming its section and saying why; anything
else it raises is a bug and goes up as it is. A ``check`` that raises is a
bug in its plugin: reported as a warning naming the section, and start-up
goes on to find out for real. Asking for a kind or instance that config does
not have is a ``LookupError`` — a bug in the caller, since config validation
already checked every reference.

What it is not: the registry of classes (``waihu.plugins``), or config
validation (``waihu.config``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from waihu.api import (
    AsrEngine,
    Classifier,
    ConfigProblem,
    IncomingCall,
    IncomingCallHandler,
    Notifier,
    Provider,
    ProviderContext,
    ProviderError,
    Storage,
    Synthesizer,
    Trunk,
    Vad,
    WaihuError,
    one_of,
    positive,
)

if TYPE_CHECKING:
    from waihu.config import Config, ProviderSection

__all__ = [
    "KINDS_BY_NAME",
    "PROVIDER_KINDS",
    "ProviderKind",
    "ProviderTypes",
    "Providers",
    "TrunkLimits",
    "check_providers",
    "protocol_methods",
    "provider_context",
]

log = logging.getLogger("waihu.providers")

DEFAULT_CALLS_PER_MINUTE = 600.0  # a trunk's pace unless its table says otherwise: 10 a second


@attrs.frozen(kw_only=True)
class TrunkLimits:
    """The core's own keys in a ``[trunk.NAME]`` table, taken out before the plugin's Config.

    ``lines`` is how many calls the trunk carries at once (None in the file:
    ``daemon.max_calls``, as ``Config.trunk_limits`` gives it); ``calls_per_minute``
    how fast new calls may start on it (a token bucket, see
    ``waihu.dispatcher``); ``dial_format`` how the carrier wants a campaign's
    E.164 numbers written (``national``, ``e164``, ``international``; None: as
    each campaign's ``dial_format`` says).
    """

    lines: int | None = attrs.field(default=None, validator=positive())
    calls_per_minute: float = attrs.field(default=DEFAULT_CALLS_PER_MINUTE, validator=positive())
    dial_format: str | None = attrs.field(
        default=None, validator=one_of("e164", "national", "international")
    )


@attrs.frozen(kw_only=True)
class ProviderKind:
    """One kind of provider: everything the core needs to know about it.

    ``name`` is the config section (``[trunk.NAME]``, or ``[storage]`` when
    ``singleton``: exactly one, required, instance name = ``name``); ``hook``
    the hook whose implementations return its classes; ``protocol`` the
    ``waihu.api`` protocol every class must implement (each method it
    declares); ``start_order`` when the daemon starts its instances (lower
    first), or None for a kind built on demand and never started; ``core_keys``
    an attrs class for keys the core itself reads from each table (popped
    before the plugin's own ``Config`` sees the table), or None.
    """

    name: str
    hook: str
    protocol: type
    singleton: bool = False
    start_order: int | None = None
    core_keys: type | None = None


# The one table of provider kinds. Start order: storage first (calls are filed from
# the start), then speech recognisers, synthesisers and voice activity detectors (slow to
# load), trunks, notifiers.
PROVIDER_KINDS: tuple[ProviderKind, ...] = (
    ProviderKind(
        name="storage",
        hook="waihu_storage_types",
        protocol=Storage,
        singleton=True,
        start_order=0,
    ),
    ProviderKind(name="asr", hook="waihu_asr_types", protocol=AsrEngine, start_order=1),
    ProviderKind(name="tts", hook="waihu_tts_types", protocol=Synthesizer, start_order=1),
    # voice activity detectors ([media] vad picks the one calls use): models load like asr's
    ProviderKind(name="vad", hook="waihu_vad_types", protocol=Vad, start_order=1),
    ProviderKind(
        name="trunk",
        hook="waihu_trunk_types",
        protocol=Trunk,
        start_order=2,
        core_keys=TrunkLimits,
    ),
    ProviderKind(name="notify", hook="waihu_notifier_types", protocol=Notifier, start_order=3),
    ProviderKind(name="nlu", hook="waihu_nlu_types", protocol=Classifier),  # one per script
)
KINDS_BY_NAME: Mapping[str, ProviderKind] = {kind.name: kind for kind in PROVIDER_KINDS}


def protocol_methods(protocol: type) -> tuple[str, ...]:
    """The public methods ``protocol`` declares (its own and its bases'), sorted."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls is object or getattr(cls, "_is_protocol", False) is False:
            continue  # only classes that are themselves protocols declare the shape
        names.update(
            name
            for name, value in vars(cls).items()
            if callable(value) and not name.startswith("_")
        )
    return tuple(sorted(names))


def provider_context(
    kind: str,
    name: str,
    *,
    state_dir: Path,
    cpu_limiter: trio.CapacityLimiter,
    incoming: IncomingCallHandler | None = None,
) -> ProviderContext:
    """The context every provider of ``kind`` named ``name`` is built with."""
    return ProviderContext(
        name=name,
        state_dir=state_dir,
        log=logging.getLogger(f"waihu.{kind}.{name}"),
        cpu_limiter=cpu_limiter,
        incoming=incoming,
    )


ProviderTypes = Mapping[str, Mapping[str, type[Provider]]]  # kind → type name → class


def check_providers(
    sections: Iterable[ProviderSection], types: ProviderTypes
) -> list[ConfigProblem]:
    """Every problem the providers' own ``check`` finds in ``sections``, in order.

    A ``check`` that raises, or returns something else than a list of
    ``ConfigProblem``, gives a warning naming the section instead.
    """
    found: list[ConfigProblem] = []
    for section in sections:
        cls = types[section.kind][section.type]
        try:
            problems = list(cls.check(section.config, section=section.key))
            if not all(isinstance(p, ConfigProblem) for p in problems):
                raise TypeError("it did not return ConfigProblem items")
        except Exception as exc:  # a plugin's bug must not hide the other sections' problems
            log.debug("check of %s failed", section.key, exc_info=True)
            found.append(
                ConfigProblem(
                    section.key,
                    f"the check of type {section.type!r} failed ({type(exc).__name__}: {exc});"
                    " it is not checked before start-up",
                    warning=True,
                )
            )
            continue
        found += problems
    return found


class Providers:
    """The daemon's providers: built from config, started in table order, looked up by name."""

    def __init__(
        self,
        config: Config,
        types: ProviderTypes,
        *,
        state_dir: Path,
        cpu_limiter: trio.CapacityLimiter,
    ) -> None:
        self.config = config
        self.types = types
        self.state_dir = state_dir
        self.cpu_limiter = cpu_limiter
        self._started: dict[str, dict[str, Any]] = {kind.name: {} for kind in PROVIDER_KINDS}
        self._inbound: IncomingCallHandler | None = None  # who takes inbound calls now

    def build(self, kind: str, name: str) -> Any:
        """A new, not yet started provider for the ``[kind.name]`` section.

        LookupError if config has no such section (a caller's bug: config
        validation checked every reference).
        """
        section = self.config.section(kind, name)
        if section is None:
            raise LookupError(f"no [{kind}.{name}] section in {self.config.path}")
        cls = self.types[kind][section.type]
        context = provider_context(
            kind,
            name,
            state_dir=self.state_dir,
            cpu_limiter=self.cpu_limiter,
            incoming=self._pass_incoming
            if kind == "trunk" and self.config.inbound.enabled
            else None,
        )
        return cls(section.config, context)

    def take_inbound_calls(self, handler: IncomingCallHandler | None) -> None:
        """Hand the trunks' inbound calls to ``handler`` from now on (None: refuse them)."""
        self._inbound = handler

    def _pass_incoming(self, call: IncomingCall) -> None:
        """The ``incoming`` handler of every trunk: on to ``take_inbound_calls``' handler."""
        handler = self._inbound
        if handler is None:  # the trunk refuses the call (480) and logs this
            raise ProviderError(f"call {call.call_id}: waihud is not taking calls now")
        handler(call)

    async def start_all(self, nursery: trio.Nursery) -> None:
        """Build and start every configured provider of every started kind, in table order.

        Each is ready (its ``run`` called ``task_status.started()``) before
        the next is started; it then runs in ``nursery`` until that is cancelled.
        """
        kinds = sorted(
            (k for k in PROVIDER_KINDS if k.start_order is not None),
            key=lambda k: k.start_order or 0,
        )
        for kind in kinds:
            for section in self.config.sections(kind.name):
                provider = self.build(kind.name, section.name)
                log.info("starting %s (%s)", section.key, section.type)
                try:
                    await nursery.start(provider.run)
                except (WaihuError, OSError) as exc:
                    raise ProviderError(f"{section.key} did not start: {_reason(exc)}") from exc
                self._started[kind.name][section.name] = provider

    def get(self, kind: str, name: str) -> Any | None:
        """The started provider ``[kind.name]``, or None if there is none (yet)."""
        return self._started[kind].get(name)

    def started(self, kind: str) -> Mapping[str, Any]:
        """The started providers of one kind by instance name, in config order."""
        return dict(self._started[kind])

    @property
    def storage(self) -> Storage:
        """The started ``[storage]``; LookupError before it has started."""
        storage = self._started["storage"].get("storage")
        if storage is None:
            raise LookupError("storage has not been started")
        return storage  # type: ignore[no-any-return]


def _reason(exc: BaseException) -> str:
    """One line for an error a provider's start raised: an OSError's text without errno."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{exc.strerror}: {where}" if where else exc.strerror
    return str(exc) or type(exc).__name__
