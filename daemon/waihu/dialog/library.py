"""The daemon's scripts: every ``*.toml`` in the scripts directory, validated and ready.

Each script is validated, its recordings decoded once (in a worker thread) at
the call rate, and its own classifier fitted from its intents. A script with
errors is reported with file and key and left out; the others stay usable, and
a reload keeps serving the old version of a script that became invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.api import Classifier
from waihu.dialog.script import Script, ScriptError, load_script
from waihu.media.prompt_player import PromptError, load_prompt

__all__ = ["LoadedScript", "ScriptLibrary"]

log = logging.getLogger("waihu.scripts")


@attrs.frozen
class LoadedScript:
    """A validated script with its recordings decoded at the call rate, and its classifier."""

    script: Script
    audio: Mapping[str, np.ndarray]  # recording path as written in the script → PCM
    classifier: Classifier


def _decode_recordings(script: Script, sample_rate: int) -> dict[str, np.ndarray]:
    variants = [v for n in script.nodes.values() for v in (*n.say, *n.reprompt)]
    variants += [v for k in script.kb.values() for v in k.say]
    audio: dict[str, np.ndarray] = {}
    for v in variants:
        if v.recording not in audio:
            audio[v.recording] = load_prompt(script.path.parent / v.recording, sample_rate)
    return audio


class ScriptLibrary:
    """Scripts by name, loaded from one directory."""

    def __init__(
        self,
        directory: Path,
        make_classifier: Callable[[], Classifier],
        *,
        sample_rate: int = 8000,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.directory = directory
        self.make_classifier = make_classifier
        self.sample_rate = sample_rate
        self.limiter = limiter
        self.scripts: dict[str, LoadedScript] = {}
        self.problems: dict[str, list[str]] = {}  # file → problems, from the last load

    def get(self, name: str) -> LoadedScript | None:
        return self.scripts.get(name)

    async def load(self) -> None:
        """(Re)load every script; keeps a previous good version of one that now fails."""
        problems: dict[str, list[str]] = {}
        loaded: dict[str, LoadedScript] = {}
        files = sorted(self.directory.glob("*.toml")) if self.directory.is_dir() else []
        if not self.directory.is_dir():
            log.warning("scripts directory %s does not exist", self.directory)
        for path in files:
            try:
                item = await trio.to_thread.run_sync(self._load_one, path, limiter=self.limiter)
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
            old = next((s for s in self.scripts.values() if str(s.script.path) == file), None)
            if old is not None and old.script.name not in loaded:
                log.warning("keeping the previous version of script %r", old.script.name)
                loaded[old.script.name] = old
        self.scripts, self.problems = loaded, problems
        log.info("scripts loaded: %s", ", ".join(sorted(loaded)) or "none")

    def _load_one(self, path: Path) -> LoadedScript:
        script = load_script(path)
        audio = _decode_recordings(script, self.sample_rate)
        classifier = self.make_classifier()
        classifier.fit(script.intents)
        return LoadedScript(script=script, audio=audio, classifier=classifier)
