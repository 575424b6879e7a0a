"""What ``waihuctl script validate`` and ``waihuctl script chat`` do, on this machine.

Both work on script files alone and never connect to waihud: a script can be
checked and talked to before it is installed, on any machine with waihu.

``validate`` loads each file as the daemon would (``load_script``, recordings
included) and prints ``FILE: OK (N nodes, M kb entries)`` or every problem,
each naming the file and the key.

``chat`` runs the real ``DialogueEngine`` with the real classifier (the
``keywords`` NLU, or ``--nlu TYPE``, found through the plugin registry) and
the text speaker: the robot's lines are printed, each line read from standard
input is what the callee said (``SpeechBegan`` then ``Utterance(text, 1.0)``),
and the intent it was classified as is printed under it. An empty line is
silence: the script's silence timer fires at once. For that the chat runs on
a clock that stands still (trio's ``MockClock`` at rate 0): typing takes no
time in the script's eyes, and an empty line moves the clock on by the
script's ``silence_timeout``, so nobody waits for real seconds. At an end
node the node, grade and tags are printed; end of input is the callee hanging
up (the script's ``default_grade``). Recordings are not needed for a chat.

What it is not: the command table (``local``) or a voice test (that is a
real call: ``waihuctl call`` against a softphone).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import pluggy
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from waihu.api import Classifier, ProviderContext, Turn
from waihu.control.render import emit
from waihu.dialog.chat import TextSpeaker
from waihu.dialog.engine import DialogueEngine, Ending, EngineEvent, SpeechBegan, Utterance
from waihu.dialog.script import Script, ScriptError, load_script
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager

__all__ = ["DEFAULT_NLU", "chat", "validate"]

DEFAULT_NLU = "keywords"  # the built-in classifier, as the shipped waihud.toml uses it
TYPED_CONFIDENCE = 1.0  # a typed line is heard exactly
CHAT_INBOX = 4  # engine events in flight: two per typed line
EXIT_FAILED = 1
CALLEE_PROMPT = "callee: "
ROBOT_PREFIX = "robot: "


def validate(files: list[str]) -> int:
    """Check each script file; print one OK line or every problem per file.

    Returns 0 when all are valid, 1 otherwise.
    """
    failed = False
    for file in files:
        try:
            script = load_script(file)
        except ScriptError as exc:
            failed = True
            for problem in exc.problems:
                emit(problem, sys.stdout)
            continue
        emit(f"{file}: OK ({len(script.nodes)} nodes, {len(script.kb)} kb entries)", sys.stdout)
    return EXIT_FAILED if failed else 0


class _ChatError(Exception):
    """The chat cannot start; the message says why."""


def chat(file: str, nlu: str = DEFAULT_NLU, variables: Mapping[str, str] | None = None) -> int:
    """Talk to the script in ``file`` over standard input and output; the exit status."""
    try:
        script = load_script(file, check_recordings=False)  # a draft may lack its recordings
    except ScriptError as exc:
        for problem in exc.problems:
            emit(problem, sys.stdout)
        return EXIT_FAILED
    try:
        classifier_type = _classifier_type(nlu)
    except _ChatError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED
    clock = MockClock(rate=0.0)  # stands still: only an empty line moves it (silence)
    with tempfile.TemporaryDirectory(prefix="waihu-chat-") as state_dir:
        try:
            return trio.run(
                _chat, script, classifier_type, Path(state_dir), dict(variables or {}), clock,
                clock=clock,
            )  # fmt: skip
        except _ChatError as exc:
            emit(f"waihuctl: {exc}", sys.stderr)
            return EXIT_FAILED


def _classifier_type(nlu: str) -> type[Any]:
    try:
        types = collect_provider_types(make_plugin_manager())["nlu"]
    except (PluginError, pluggy.PluginValidationError) as exc:
        raise _ChatError(f"plugin error: {exc}") from None
    if nlu not in types:
        raise _ChatError(f"no nlu type {nlu!r} (installed: {', '.join(sorted(types)) or 'none'})")
    return types[nlu]


def _make_classifier(cls: type[Any], script: Script, state_dir: Path) -> Classifier:
    try:
        config = cls.Config()
    except TypeError:
        raise _ChatError(
            f"nlu type {cls.type_name!r} needs settings; script chat runs a classifier "
            "with its defaults only"
        ) from None
    context = ProviderContext(
        name="chat",
        state_dir=state_dir,
        log=logging.getLogger(f"waihu.nlu.{cls.type_name}"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    classifier: Classifier = cls(config, context)
    classifier.fit(script.intents)
    return classifier


async def _chat(
    script: Script,
    classifier_type: type[Any],
    state_dir: Path,
    variables: dict[str, str],
    clock: MockClock,
) -> int:
    out = sys.stdout
    classifier = _make_classifier(classifier_type, script, state_dir)

    def on_turn(turn: Turn) -> None:
        if turn.speaker == "callee":
            emit(f"  → {turn.intent}", out)

    send, inbox = trio.open_memory_channel[EngineEvent](CHAT_INBOX)
    engine = DialogueEngine(
        script,
        classifier,
        TextSpeaker(echo=lambda text: emit(ROBOT_PREFIX + text, out)),
        inbox,
        on_turn=on_turn,
        variables=variables,
        now=time.time,
    )
    ending: Ending | None = None
    async with trio.open_nursery() as nursery:

        async def converse() -> None:
            nonlocal ending
            ending = await engine.run()
            nursery.cancel_scope.cancel()  # the conversation is over: stop reading

        nursery.start_soon(converse)
        await _callee(send, clock, script.silence_timeout, sys.stdin, out)
        nursery.cancel_scope.cancel()  # end of input: the callee hung up
    if ending is None:
        grade = script.default_grade
        emit(f"hung up at node {engine.node}: grade {grade} (the script's default_grade)", out)
        return 0
    tags = ", ".join(ending.tags) or "none"
    after = " after silence" if ending.reason == "silence" else ""
    emit(f"end{after}: node {ending.node}, grade {ending.grade}, tags {tags}", out)
    return 0


async def _callee(
    send: trio.MemorySendChannel[EngineEvent],
    clock: MockClock,
    silence_timeout: float,
    stdin: TextIO,
    out: TextIO,
) -> None:
    """Feed each line of ``stdin`` to the engine until end of input."""
    interactive = stdin.isatty()
    while True:
        await wait_all_tasks_blocked()  # the robot has said its piece and listens
        if interactive:
            out.write(CALLEE_PROMPT)
            out.flush()
        line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not line:
            return
        text = line.strip()
        if not text:
            emit(f"  ({silence_timeout:g} s of silence)", out)
            await wait_all_tasks_blocked()  # the engine's silence timer is running
            clock.jump(silence_timeout)
            continue
        if not interactive:
            emit(CALLEE_PROMPT + text, out)  # the typed line is not on screen: show it
        await send.send(SpeechBegan())
        await send.send(Utterance(text, TYPED_CONFIDENCE))
