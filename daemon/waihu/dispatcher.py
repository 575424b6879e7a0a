"""The one way a call starts: admission, lines, pacing and the live calls.

Every call — one placed by an operator (``waihuctl call``), one a campaign
dials, later the console's — starts with ``CallDispatcher.start``; an inbound
call a trunk takes for one of its numbers comes to ``CallDispatcher.incoming``
(see *inbound calls* below). The dispatcher owns:

- *admission*: no call while draining, for a script that is not loaded or a
  trunk that is not configured (the refusal lists the known ones and
  suggests the closest: ``no trunk named 'ofice' (did you mean 'office'?
  known: office, backup)``), a target the trunk cannot dial (its
  ``check_target``: ``TargetRefused`` with the trunk's reason, before any
  call id is issued or anything filed), or variables that leave one of the
  script's ``{placeholders}`` empty (blank or absent, with no
  ``[variables]`` default: the callee would hear nothing, or the brace read
  out); each refusal is a ``DispatchRefused`` with a control-socket error code;
- *lines*: each trunk carries at most its ``lines`` calls at once, and the
  daemon at most ``daemon.max_calls``. A ``Line`` holds one of each. A single
  call takes one at once or is refused (``try_acquire_line``); a campaign
  waits for one (``acquire_line``), first come first served across campaigns
  (``trio.Semaphore`` wakes its waiters in order);
- *pacing*: each trunk starts at most ``calls_per_minute`` calls a minute;
  ``pace`` waits for the trunk's next token (a ``TokenBucket``), waiters
  served in turn;
- *the live calls*: each runs in the dispatcher's nursery (``run``) until it
  is filed; then the caller's ``on_end`` runs, then its line is given back.
  ``drain`` refuses new calls, lets live ones finish up to a deadline, then
  cancels the rest, which hang up cleanly and are filed;
- *inbound calls*: while it runs, the trunks hand it their inbound calls
  (``Providers.take_inbound_calls``). A call gets the script ``[inbound]``
  names for the number called, a call id, a record (``direction`` inbound,
  ``number`` the caller, ``trunk``) and a line of its trunk, of the daemon
  and of ``inbound.max_calls``, and is answered by ``waihu.call.answer_call``.
  Refused, it is answered at once and filed nowhere: no script for the
  number → ``inbound.unknown_status`` (404 or 480); its script not loaded or
  it needs variables an inbound call does not have → 480 (logged as an
  error, a script not loaded also once at start-up: the configuration is
  wrong); no line free → 486 Busy Here;
  draining → 503 Service Unavailable.

Error handling: a call's own failures stay in the call (``waihu.call``); an
``on_end`` that raises is logged and changes nothing else; an ``on_end``
that hangs is cut off after ``ON_END_SECONDS``. A refusal raises before
anything was started or held.

What it is not: the call itself (``waihu.call``), the daemon's start-up and
signals (``waihu.daemon``), or the campaign's own limits and contact queue
(``waihu.campaign``).
"""

from __future__ import annotations

import difflib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Literal

import attrs
import trio

from waihu.api import BadTarget, CallRecord, IncomingCall, Trunk, WaihuError, check_target
from waihu.call import CallServices, answer_call, place_call
from waihu.call_control import CallControl
from waihu.campaign.pacing import TokenBucket
from waihu.config import Config
from waihu.dialog.library import LoadedScript, ScriptLibrary, missing_variables
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.providers import Providers
from waihu.transfer import Transfers

__all__ = [
    "CallDispatcher",
    "CallRequest",
    "DispatchRefused",
    "Line",
    "RefusalCode",
    "TargetRefused",
    "new_call_id",
    "unknown_name",
]

log = logging.getLogger("waihu.dispatcher")

ON_END_SECONDS = 30.0  # an on_end callback (a campaign filing its attempt) may take this long
TRUNK_BURST = 1  # calls a trunk may start at once: carriers count calls per second, so spread
CALL_ID_TIME = "%Y%m%d-%H%M%S-"  # a call id starts with its local start time, for people
CALL_ID_RANDOM_BYTES = 3  # then random hex: unique among calls started in the same second
BUSY_STATUS = 486  # an inbound call with no line free: Busy Here
UNAVAILABLE_STATUS = 480  # an inbound call its configuration cannot answer now
DRAINING_STATUS = 503  # an inbound call while waihud shuts down: the caller's side may retry
ANONYMOUS = "anonymous"  # the number filed for a caller who gave none (RFC 3323's user)
# "did you mean": difflib's default similarity, which takes 'ofice' or 'Office' for 'office'
# but not 'home' (a name that is merely short and shares letters)
SUGGEST_CUTOFF = 0.6

RefusalCode = Literal["unavailable", "not_found", "bad_request"]
OnEnd = Callable[[CallRecord], Awaitable[None]]


def inbound_variables(call: IncomingCall) -> dict[str, str]:
    """The variables an inbound call's script can use: ``{caller}`` and ``{called}``."""
    return {"caller": call.caller, "called": call.number}


def new_call_id(now: float | None = None) -> str:
    """A new call id: ``20261125-150001-a1b2c3`` (local time, then random hex)."""
    stamp = time.strftime(CALL_ID_TIME, time.localtime(time.time() if now is None else now))
    return stamp + secrets.token_hex(CALL_ID_RANDOM_BYTES)


@attrs.frozen(kw_only=True)
class CallRequest:
    """What to call, how, and on whose behalf."""

    target: str  # a number or a SIP URI
    script: str
    trunk: str | None = None  # None: [call] trunk, or the only trunk
    variables: Mapping[str, str] = attrs.field(factory=dict)
    caller_id: str | None = None  # None: [call] caller_id
    ring_timeout: float | None = None  # None: [call] ring_timeout
    campaign_id: str | None = None
    call_id: str | None = None  # chosen by the caller (a campaign commits it before dialling)


class DispatchRefused(WaihuError):
    """A call cannot start; ``code`` is the control socket's error code for why."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TargetRefused(DispatchRefused):
    """The trunk cannot dial the target (``bad_request``): dialling it again never helps,
    so a campaign files the contact as an invalid number instead of retrying."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


def unknown_name(kind: str, name: str, known: Collection[str], *, none: str) -> str:
    """The refusal for a name that is not among ``known``, listing them and suggesting the
    closest: ``no trunk named 'ofice' (did you mean 'office'? known: office, backup)``.

    ``none`` says why there are none (``none configured``).
    """
    if not known:
        return f"no {kind} named {name!r} ({none})"
    listed = ", ".join(known)
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=SUGGEST_CUTOFF)
    if not close:  # a difference of case alone is also a likely slip
        close = [k for k in known if k.casefold() == name.casefold()][:1]
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no {kind} named {name!r} ({hint}known: {listed})"


class Line:
    """One held line of a trunk and of ``daemon.max_calls``; ``release`` gives both back once."""

    def __init__(self, trunk: str, semaphores: tuple[trio.Semaphore, ...]) -> None:
        self.trunk = trunk
        self._semaphores = semaphores
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Give the line back; later calls do nothing."""
        if self._held:
            self._held = False
            for semaphore in self._semaphores:
                semaphore.release()


@attrs.frozen
class _Admitted:
    """An inbound call that may be answered: its script (by name, and loaded) and its line."""

    script: str
    loaded: LoadedScript
    line: Line


class CallDispatcher:
    """Starts calls under the daemon's and each trunk's limits, and keeps the live ones."""

    def __init__(
        self,
        config: Config,
        providers: Providers,
        scripts: ScriptLibrary,
        *,
        clock: MediaClock,
        events: EventBus,
    ) -> None:
        self.config = config
        self.providers = providers
        self.scripts = scripts
        self.clock = clock
        self.events = events
        self.draining = False
        self._live: dict[str, CallRecord] = {}
        self._controls: dict[str, CallControl] = {}  # an operator's handle on each live call
        self._all_lines = trio.Semaphore(config.daemon.max_calls)
        self._trunk_lines: dict[str, trio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._pacing: dict[str, trio.Lock] = {}  # one waiter at a time takes the trunk's tokens
        for section in config.sections("trunk"):
            limits = config.trunk_limits(section.name)
            self._trunk_lines[section.name] = trio.Semaphore(limits.lines)
            self._buckets[section.name] = TokenBucket(limits.calls_per_minute, TRUNK_BURST)
            self._pacing[section.name] = trio.Lock()
        inbound = config.inbound
        self._inbound_lines = trio.Semaphore(inbound.max_calls or config.daemon.max_calls)
        self._calls: trio.Nursery | None = None
        self._running = 0  # call tasks, until each has filed, run on_end and given back its line
        self._idle = trio.Event()
        self._idle.set()

    @property
    def live(self) -> Mapping[str, CallRecord]:
        """Calls dialling, ringing or answered, by id (their records, as they are now)."""
        return self._live

    @property
    def trunks(self) -> list[str]:
        """The configured trunks, in config order."""
        return list(self._trunk_lines)

    # ───────────────────────── life cycle ─────────────────────────

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the calls' nursery; ready for ``start`` once started, until cancelled or drained."""
        async with trio.open_nursery() as calls:
            self._calls = calls
            self._check_inbound_scripts()
            self.providers.take_inbound_calls(self.incoming)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.providers.take_inbound_calls(None)

    async def drain(self, timeout: float) -> None:
        """Refuse new calls; give live ones ``timeout`` seconds, then cancel the rest.

        Returns once every call has been filed (a cancelled call hangs up and
        files its record under a shielded, bounded scope).
        """
        self.draining = True
        if self._live:
            log.info("draining: %d live call(s), up to %.0f s", len(self._live), timeout)
        with trio.move_on_after(timeout):
            await self._idle.wait()
        if self._running and self._calls is not None:
            log.warning("drain deadline: hanging up %d call(s)", len(self._live))
            self._calls.cancel_scope.cancel()
        await self._idle.wait()

    # ───────────────────────── what a call needs ─────────────────────────

    def resolve_trunk(self, name: str | None) -> str:
        """The trunk a call goes through: ``name``, else ``[call] trunk``, else the only one.

        DispatchRefused not_found for a trunk not configured, bad_request when
        none is named and there is more than one.
        """
        known = ", ".join(self._trunk_lines) or "none"
        if name is None:
            name = self.config.call.trunk
        if name is None:
            if len(self._trunk_lines) != 1:
                raise DispatchRefused("bad_request", f"say which trunk (configured: {known})")
            (name,) = self._trunk_lines
        if name not in self._trunk_lines:
            raise DispatchRefused(
                "not_found", unknown_name("trunk", name, self._trunk_lines, none="none configured")
            )
        return name

    def script(self, name: str) -> LoadedScript:
        """The loaded script ``name``; DispatchRefused not_found naming the loaded ones and
        the closest."""
        loaded = self.scripts.get(name)
        if loaded is None:
            known = sorted(self.scripts.scripts)
            raise DispatchRefused(
                "not_found", unknown_name("script", name, known, none="none loaded")
            )
        return loaded

    async def acquire_line(self, trunk: str) -> Line:
        """Wait for a line of ``trunk`` and of the daemon, in turn with other waiters."""
        trunk_lines = self._lines_of(trunk)
        await trunk_lines.acquire()
        try:
            await self._all_lines.acquire()
        except BaseException:
            trunk_lines.release()
            raise
        return Line(trunk, (trunk_lines, self._all_lines))

    def try_acquire_line(self, trunk: str) -> Line:
        """A line of ``trunk`` and of the daemon now, or DispatchRefused unavailable."""
        trunk_lines = self._lines_of(trunk)
        try:
            trunk_lines.acquire_nowait()
        except trio.WouldBlock:
            lines = self.config.trunk_limits(trunk).lines
            raise DispatchRefused(
                "unavailable", f"trunk {trunk}: all {lines} lines busy; try later"
            ) from None
        try:
            self._all_lines.acquire_nowait()
        except trio.WouldBlock:
            trunk_lines.release()
            raise DispatchRefused(
                "unavailable",
                f"all {self.config.daemon.max_calls} lines busy (daemon.max_calls); try later",
            ) from None
        return Line(trunk, (trunk_lines, self._all_lines))

    async def pace(self, trunk: str) -> None:
        """Wait until ``trunk`` may start one more call (its ``calls_per_minute``)."""
        trunk = self.resolve_trunk(trunk)
        bucket = self._buckets[trunk]
        async with self._pacing[trunk]:
            while (wait := bucket.take(trio.current_time())) > 0:
                await trio.sleep(wait)

    def _lines_of(self, trunk: str) -> trio.Semaphore:
        return self._trunk_lines[self.resolve_trunk(trunk)]

    # ───────────────────────── starting a call ─────────────────────────

    def start(
        self,
        request: CallRequest,
        *,
        line: Line | None = None,
        on_end: OnEnd | None = None,
    ) -> CallRecord:
        """Start one call now; returns its record (``dialing``) while it runs on.

        Refuses at once with DispatchRefused — while draining, for an unknown
        script or trunk, a target the trunk's ``check_target`` refuses
        (``TargetRefused``), a variable the script needs left
        empty, a call id already live, or when no
        line is free (``line`` None: one is taken with ``try_acquire_line``;
        a refused caller keeps the line it passed). Once the call's record is
        filed final, ``on_end(record)`` is awaited (its exceptions logged),
        then the line is given back.
        """
        if self.draining:
            raise DispatchRefused("unavailable", "waihud is shutting down; no new calls")
        if self._calls is None:
            raise DispatchRefused("unavailable", "waihud is not taking calls yet")
        loaded = self.script(request.script)
        trunk_name = self.resolve_trunk(request.trunk)
        trunk = self.providers.get("trunk", trunk_name)
        if trunk is None:
            raise DispatchRefused("unavailable", f"trunk {trunk_name} is not running")
        try:
            target = check_target(trunk, request.target)  # as the trunk will dial it
        except BadTarget as exc:
            raise TargetRefused(str(exc)) from None
        if not target:  # a trunk without check_target takes anything else
            raise TargetRefused("target must be a number or SIP URI")
        missing = missing_variables(loaded.script, request.variables)
        if missing:
            raise DispatchRefused(
                "bad_request",
                "; ".join(
                    f"script {request.script!r} needs variable {name!r} ({line})"
                    for name, line in missing
                ),
            )
        call_id = request.call_id or new_call_id()
        if call_id in self._live:
            raise DispatchRefused("bad_request", f"call {call_id} is already live")
        if line is None:
            line = self.try_acquire_line(trunk_name)
        elif line.trunk != trunk_name or not line.held:
            raise ValueError(f"line of trunk {line.trunk} (held: {line.held}) for {trunk_name}")
        record = CallRecord(
            id=call_id,
            number=target,
            script=request.script,
            trunk=trunk_name,
            created_at=time.time(),
            campaign_id=request.campaign_id,
            script_hash=loaded.script.content_hash or None,
        )
        self._live[call_id] = record
        self._controls[call_id] = CallControl()
        if self._running == 0:
            self._idle = trio.Event()
        self._running += 1
        self._calls.start_soon(self._run_call, trunk, record, loaded, request, line, on_end)
        return record

    async def _run_call(
        self,
        trunk: Trunk,
        record: CallRecord,
        loaded: LoadedScript,
        request: CallRequest,
        line: Line,
        on_end: OnEnd | None,
    ) -> None:
        try:
            await place_call(
                self._services(),
                trunk,
                record,
                loaded,
                variables=request.variables,
                caller_id=request.caller_id,
                ring_timeout=request.ring_timeout,
                control=self._controls[record.id],
            )
        finally:
            await self._call_over(record, line, on_end)

    # ───────────────────────── inbound calls ─────────────────────────

    def incoming(self, call: IncomingCall) -> None:
        """Take an inbound call a trunk accepted (``waihu.api.IncomingCallHandler``): start
        answering it with its number's script, or refuse it (see the module docstring).

        Never raises for a call it refuses: the refusal is sent from a task of its own.
        """
        calls = self._calls
        if calls is None:
            raise DispatchRefused("unavailable", "waihud is not taking calls yet")
        admitted = self._admit_inbound(call)
        if not isinstance(admitted, _Admitted):
            status, why = admitted
            log.info(
                "inbound call %s from %r to %s on %s refused %d: %s",
                call.call_id, call.caller, call.number, call.trunk, status, why,
            )  # fmt: skip
            calls.start_soon(self._refuse, call, status)
            return
        loaded, line = admitted.loaded, admitted.line
        record = CallRecord(
            id=new_call_id(),
            number=call.caller or ANONYMOUS,
            script=admitted.script,
            trunk=call.trunk,
            created_at=time.time(),
            script_hash=loaded.script.content_hash or None,
            direction="inbound",
        )
        log.info(
            "inbound call %s (SIP %s) from %s to %s on %s: script %s",
            record.id, call.call_id, record.number, call.number, call.trunk, record.script,
        )  # fmt: skip
        self._live[record.id] = record
        self._controls[record.id] = CallControl()
        if self._running == 0:
            self._idle = trio.Event()
        self._running += 1
        calls.start_soon(self._run_inbound, call, record, loaded, line)

    def _check_inbound_scripts(self) -> None:
        """Say at start-up, once per key, which ``[inbound]`` script is not loaded (its
        callers will hear 480 until it is)."""
        inbound = self.config.inbound
        named = [("inbound.script", inbound.script)] + [
            (f"inbound.numbers.{number}", script) for number, script in inbound.numbers.items()
        ]
        for key, script in named:
            if script is not None and self.scripts.get(script) is None:
                known = ", ".join(sorted(self.scripts.scripts)) or "none loaded"
                log.error(
                    "%s: %s: script %r is not loaded (loaded: %s); its callers get 480",
                    self.config.path, key, script, known,
                )  # fmt: skip

    def _admit_inbound(self, call: IncomingCall) -> _Admitted | tuple[int, str]:
        """The script and line for an inbound call, or (status, why) to refuse it with."""
        inbound = self.config.inbound
        if self.draining:
            return DRAINING_STATUS, "waihud is shutting down"
        script_name = inbound.script_for(call.number)
        if script_name is None:
            return inbound.unknown_status, "no [inbound] script for this number"
        loaded = self.scripts.get(script_name)
        if loaded is None:
            log.error(
                "%s: inbound script %r for %s is not loaded (known: %s)",
                self.config.path, script_name, call.number,
                ", ".join(sorted(self.scripts.scripts)) or "none",
            )  # fmt: skip
            return UNAVAILABLE_STATUS, f"script {script_name!r} is not loaded"
        missing = missing_variables(loaded.script, inbound_variables(call))
        if missing:
            name, line_text = missing[0]
            log.error(
                "%s: inbound script %r needs variable %r (%s), which an inbound call lacks",
                self.config.path, script_name, name, line_text,
            )  # fmt: skip
            return UNAVAILABLE_STATUS, f"script {script_name!r} needs variable {name!r}"
        if call.trunk not in self._trunk_lines:
            return UNAVAILABLE_STATUS, f"trunk {call.trunk!r} is not configured"
        line = self._try_inbound_line(call.trunk)
        if line is None:
            return BUSY_STATUS, "no line free"
        return _Admitted(script_name, loaded, line)

    def _try_inbound_line(self, trunk: str) -> Line | None:
        """A line of ``inbound.max_calls``, of ``trunk`` and of the daemon now, or None."""
        held: list[trio.Semaphore] = []
        for semaphore in (self._inbound_lines, self._trunk_lines[trunk], self._all_lines):
            try:
                semaphore.acquire_nowait()
            except trio.WouldBlock:
                for taken in held:
                    taken.release()
                return None
            held.append(semaphore)
        return Line(trunk, tuple(held))

    async def _refuse(self, call: IncomingCall, status: int) -> None:
        try:
            await call.reject(status)
        except Exception:
            log.exception("inbound call %s: refusing it failed", call.call_id)

    async def _run_inbound(
        self, call: IncomingCall, record: CallRecord, loaded: LoadedScript, line: Line
    ) -> None:
        try:
            await answer_call(
                self._services(),
                call,
                record,
                loaded,
                variables=inbound_variables(call),
                answer_after=self.config.inbound.answer_after,
                control=self._controls[record.id],
            )
        finally:
            await self._call_over(record, line, None)

    async def _call_over(self, record: CallRecord, line: Line, on_end: OnEnd | None) -> None:
        """A call has been filed: forget it, run ``on_end``, give its line back."""
        del self._live[record.id]
        del self._controls[record.id]
        if on_end is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(ON_END_SECONDS) as slow:
                try:
                    await on_end(record)
                except Exception:
                    log.exception("call %s: on_end failed", record.id)
            if slow.cancelled_caught:
                log.error("call %s: on_end gave up after %.0f s", record.id, ON_END_SECONDS)
        line.release()
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    def control(self, call_id: str) -> CallControl:
        """The operator's handle on the live call ``call_id``; KeyError when it is not live."""
        return self._controls[call_id]

    def _services(self) -> CallServices:
        config = self.config
        recordings = Path(config.daemon.state_dir) / config.daemon.recordings_dir
        return CallServices(
            storage=self.providers.storage,
            asr=self.providers.get("asr", config.call.asr),
            vad=self.providers.get("vad", config.media.vad) if config.media.vad else None,
            clock=self.clock,
            events=self.events,
            media=config.media,
            call=config.call,
            recordings_dir=recordings if config.media.record else None,
            region=config.campaign.default_region,
            speech=self.scripts.speech,
            transfers=Transfers(
                config.transfers,
                trunk=functools.partial(self.providers.get, "trunk"),
                take_line=self.try_acquire_line,  # the agent's leg takes a line like any call
                caller_id=config.call.caller_id,
            ),
            who=config.who_answered,
        )
