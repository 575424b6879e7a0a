"""The daemon's scripts: every ``*.toml`` in the scripts directory, validated and ready.

Each script is validated, its recordings decoded once (in a worker thread) at
the call rate, and its own classifier fitted from its intents. A script with
errors is reported with file and key and left out; the others stay usable, and
a reload keeps serving the old version of a script that became invalid.

Speech for lines without a recording: a line (a ``Variant``) whose
``recording`` is None is spoken by the call's TTS provider (``[call] tts``).
When its text has no ``{variable}`` it is the same for every call, so it is
synthesised once, when the script loads; a line with a variable is
synthesised per call (``waihu.call`` renders a call's lines while it rings).
A line with a recording plays the recording, variables or not. A script that
needs TTS when none is configured is refused, naming the line:
``nodes.offer.say[0]: no recording and no [call] tts to speak it``.

``SpeechCache`` keeps synthesised audio per (text, language, rate), shared
by every script and call of the daemon, as an LRU bounded by
``TTS_CACHE_BYTES``; a line asked for while it is being synthesised waits
for that one synthesis rather than starting another. A loaded script keeps
its own fixed lines (``LoadedScript.speech``) whatever the cache drops, so
the bound only limits how many calls' own lines are kept for reuse.

Error handling: a synthesiser failing on a line at load refuses the script
with the line's key and the synthesiser's message, like any other problem of
the file. At call time the caller (``waihu.call``) gets the ``ProviderError``.

What it is not: the script format (``waihu.dialog.script``) or the player of
a call's lines (``waihu.call``).
"""

from __future__ import annotations

import logging
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.api import Classifier, ProviderError, Synthesizer
from waihu.dialog.script import Script, ScriptError, Variant, load_script
from waihu.media.prompt_player import PromptError, load_prompt

__all__ = [
    "CASES_SUFFIX",
    "TTS_CACHE_BYTES",
    "LoadedScript",
    "ScriptLibrary",
    "SpeechCache",
    "call_variables",
    "fields",
    "fill",
    "missing_variables",
    "per_call_lines",
    "required_variables",
    "script_files",
    "static_tts_lines",
    "without_tts",
]

log = logging.getLogger("waihu.scripts")

# Synthesised audio kept across scripts and calls: 64 MB is about 35 minutes of 8 kHz
# 16-bit speech — every fixed line of dozens of scripts plus the recent calls' own lines.
TTS_CACHE_BYTES = 64 * 1024 * 1024
NO_TTS = "no recording and no [call] tts to speak it"

# ───────────────────────── which lines need what ─────────────────────────


def fields(text: str) -> set[str]:
    """The ``{variable}`` names a line's text fills in."""
    return {
        field.split(".")[0].split("[")[0]
        for _text, field, _spec, _conv in string.Formatter().parse(text)
        if field
    }


class _Missing(dict):  # type: ignore[type-arg]
    """Variables for text: an unknown ``{field}`` stays as written (as the engine does)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with its ``{variables}`` filled in, exactly as the dialogue engine says it."""
    return string.Formatter().vformat(text, (), _Missing(variables))


def call_variables(script: Script, variables: Mapping[str, str]) -> dict[str, str]:
    """The values a call fills its lines with: the script's ``[variables]`` defaults,
    overridden by the call's (a contact's) values; blank values count as none."""
    given = {**script.variables, **{k: v for k, v in variables.items() if v.strip()}}
    return {k: v for k, v in given.items() if v.strip()}


def _set_variables(script: Script) -> set[str]:
    """Variables the script sets itself (a node's or an action's ``set``)."""
    handlers = script.handlers
    actions = [a for node in script.nodes.values() for a in node.on.values()]
    actions += [a for entry in script.kb.values() for a in (entry.then, entry.on_limit)]
    actions += [handlers.no_input.then, handlers.no_match.then if handlers.no_match else None]
    actions += [*handlers.dtmf.values(), *handlers.on.values(), script.on_turn_cap]
    actions += [script.on_transfer_failed]
    names = {k for node in script.nodes.values() for k in node.set}
    return names | {k for a in actions if a is not None for k in a.set}


def static_tts_lines(script: Script) -> list[tuple[str, Variant]]:
    """Lines spoken by TTS the same way in every call: no recording, no variable."""
    return [(k, v) for k, v in script.variants() if v.recording is None and not fields(v.text)]


def per_call_lines(script: Script) -> list[tuple[str, Variant]]:
    """Lines spoken by TTS per call: no recording, and a variable in the text."""
    return [(k, v) for k, v in script.variants() if v.recording is None and fields(v.text)]


def without_tts(script: Script) -> list[str]:
    """The problems of ``script`` when no TTS is configured: one per line that needs it
    (no recording), naming file and key."""
    spoken = [*static_tts_lines(script), *per_call_lines(script)]
    return [f"{script.path}: {key}: {NO_TTS}" for key, _line in spoken]


def required_variables(script: Script) -> frozenset[str]:
    """The placeholders every call must bring a value for: those with no (non-blank)
    ``[variables]`` default that the script does not set itself. A contact list for
    the script needs these columns, filled."""
    defaults = call_variables(script, {})
    return frozenset(script.placeholders - defaults.keys() - _set_variables(script))


def missing_variables(script: Script, variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, key of the first line using it) for each placeholder a call with
    ``variables`` would leave empty: a required one (``required_variables``) that is
    blank or absent. In script order."""
    required = required_variables(script)
    have = call_variables(script, variables)
    missing: dict[str, str] = {}
    for key, variant in script.variants():
        for name in sorted(fields(variant.text)):
            if name in required and name not in have and name not in missing:
                missing[name] = key
    return list(missing.items())


# ───────────────────────── the speech cache ─────────────────────────


@attrs.define(eq=False)
class _Flight:
    """One synthesis under way; those asking for the same line wait on it."""

    done: trio.Event = attrs.Factory(trio.Event)
    audio: np.ndarray | None = None  # None once done: it failed (each waiter tries itself)


class SpeechCache:
    """Synthesised lines per (text, language, rate): an LRU of at most ``max_bytes``.

    Returned arrays are read-only and shared: every call speaking a line plays
    the same array. ``hits`` and ``misses`` count lookups (a wait for a
    synthesis already under way is a hit).
    """

    def __init__(self, synthesizer: Synthesizer, *, max_bytes: int = TTS_CACHE_BYTES) -> None:
        self.synthesizer = synthesizer
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._audio: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._flights: dict[tuple[str, str, int], _Flight] = {}

    def __len__(self) -> int:
        return len(self._audio)

    @property
    def size(self) -> int:
        """Bytes of audio held."""
        return self._bytes

    def peek(self, text: str, *, language: str, sample_rate: int) -> np.ndarray | None:
        """The cached audio of a line (marked recently used), or None; never synthesises."""
        key = (text, language, sample_rate)
        audio = self._audio.get(key)
        if audio is not None:
            self._audio.move_to_end(key)
        return audio

    async def speak(self, text: str, *, language: str, sample_rate: int) -> np.ndarray:
        """The line's audio: from the cache, or synthesised once and kept.

        Raises the synthesiser's ``ProviderError`` (nothing is cached then).
        """
        key = (text, language, sample_rate)
        while True:
            audio = self.peek(text, language=language, sample_rate=sample_rate)
            if audio is not None:
                self.hits += 1
                return audio
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.audio is not None:
                self.hits += 1
                return flight.audio
        self.misses += 1
        flight = self._flights[key] = _Flight()
        try:
            pcm = await self.synthesizer.synthesize(
                text, language=language, sample_rate=sample_rate
            )
            audio = np.array(pcm, dtype=np.int16)  # our own copy, then frozen: it is shared
            audio.flags.writeable = False
            flight.audio = audio
            self._keep(key, audio)
            return audio
        finally:
            del self._flights[key]
            flight.done.set()

    def _keep(self, key: tuple[str, str, int], audio: np.ndarray) -> None:
        if audio.nbytes > self.max_bytes:
            return  # a line longer than the whole cache is spoken, not kept
        self._audio[key] = audio
        self._bytes += audio.nbytes
        while self._bytes > self.max_bytes:
            _old, dropped = self._audio.popitem(last=False)
            self._bytes -= dropped.nbytes


# ───────────────────────── the library ─────────────────────────


@attrs.frozen
class LoadedScript:
    """A validated script with its recordings decoded at the call rate, and its classifier.

    ``speech`` holds the synthesised audio of the lines every call says the
    same way (no recording, no variable), by text. ``loaded_at`` is when this
    version was read (seconds since the epoch): a reload that finds the file
    broken keeps it, and ``status`` says which one is in use.
    """

    script: Script
    audio: Mapping[str, np.ndarray]  # recording path as written in the script → PCM
    classifier: Classifier
    speech: Mapping[str, np.ndarray] = attrs.Factory(dict)
    loaded_at: float = 0.0


def _decode_recordings(script: Script, sample_rate: int) -> dict[str, np.ndarray]:
    audio: dict[str, np.ndarray] = {}
    for _key, v in script.variants():
        if v.recording is not None and v.recording not in audio:
            audio[v.recording] = load_prompt(script.path.parent / v.recording, sample_rate)
    return audio


CASES_SUFFIX = ".cases.toml"  # dialogue test cases an author keeps beside a script


def script_files(directory: Path) -> list[Path]:
    """The script files of a scripts directory: its ``*.toml`` at the top level, but not
    the dialogue test cases kept beside them (``NAME.cases.toml``); sorted."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.toml") if not p.name.endswith(CASES_SUFFIX))


class ScriptLibrary:
    """Scripts by name, loaded from one directory.

    ``speech`` is the daemon's TTS cache, or None when no ``[call] tts`` is
    configured (a script that needs TTS is then refused).
    """

    def __init__(
        self,
        directory: Path,
        make_classifier: Callable[[], Classifier],
        *,
        sample_rate: int = 8000,
        limiter: trio.CapacityLimiter | None = None,
        speech: SpeechCache | None = None,
    ) -> None:
        self.directory = directory
        self.make_classifier = make_classifier
        self.sample_rate = sample_rate
        self.limiter = limiter
        self.speech = speech
        self.scripts: dict[str, LoadedScript] = {}
        self.problems: dict[str, list[str]] = {}  # file → problems, from the last load

    def get(self, name: str) -> LoadedScript | None:
        return self.scripts.get(name)

    def in_use(self, file: str) -> LoadedScript | None:
        """The loaded script read from ``file`` (a key of ``problems``), or None: which
        version of a file that now has errors still serves calls, if any."""
        return next((s for s in self.scripts.values() if str(s.script.path) == file), None)

    async def load(self) -> None:
        """(Re)load every script; keeps a previous good version of one that now fails."""
        problems: dict[str, list[str]] = {}
        loaded: dict[str, LoadedScript] = {}
        files = script_files(self.directory)
        if not self.directory.is_dir():
            log.warning("scripts directory %s does not exist", self.directory)
        for path in files:
            try:
                item = await trio.to_thread.run_sync(self._load_one, path, limiter=self.limiter)
                item = await self._synthesise(item)
            except ScriptError as exc:
                problems[str(path)] = exc.problems
            except PromptError as exc:
                problems[str(path)] = [str(exc)]
            else:
                if item.script.name in loaded:
                    problems[str(path)] = [
                        f"{path}: script.name: {item.script.name!r} is also the name of "
                        f"{loaded[item.script.name].script.path}"
                    ]
                    continue
                loaded[item.script.name] = item
        for file, errs in problems.items():
            for err in errs:
                log.error("script %s", err)
            old = self.in_use(file)
            if old is not None and old.script.name not in loaded:
                log.warning("keeping the previous version of script %r", old.script.name)
                loaded[old.script.name] = old
        self.scripts, self.problems = loaded, problems
        log.info("scripts loaded: %s", ", ".join(sorted(loaded)) or "none")

    def _load_one(self, path: Path) -> LoadedScript:
        script = load_script(path)
        audio = _decode_recordings(script, self.sample_rate)
        classifier = self.make_classifier()
        try:
            classifier.fit(script.intents)
        except ValueError as exc:  # a rule the classifier cannot use (the loader checks most)
            raise ScriptError([f"{path}: intents: {exc}"]) from None
        return LoadedScript(
            script=script, audio=audio, classifier=classifier, loaded_at=time.time()
        )

    async def _synthesise(self, item: LoadedScript) -> LoadedScript:
        """``item`` with its fixed TTS lines spoken; ScriptError naming each line that
        cannot be (no TTS configured, or the synthesiser failed)."""
        script = item.script
        problems: list[str] = []
        if self.speech is None:
            problems = without_tts(script)
            if problems:
                raise ScriptError(problems)
            return item
        speech: dict[str, np.ndarray] = {}
        for key, variant in static_tts_lines(script):
            if variant.text in speech:
                continue
            try:
                speech[variant.text] = await self.speech.speak(
                    variant.text, language=script.language, sample_rate=self.sample_rate
                )
            except ProviderError as exc:
                problems.append(f"{script.path}: {key}: {exc}")
        if problems:
            raise ScriptError(problems)
        return attrs.evolve(item, speech=speech)
