"""Phrase lists → vosk grammars, keeping only words the model knows.

vosk builds a small language model from a JSON list of phrases and silently
drops every word missing from the model's vocabulary (with only a Kaldi
warning on stderr). A script writes phrases as people spell them ("얼마예요"),
which a model may split differently ("얼마 예요"), so we check each word
ourselves and report what will never be recognised, naming it.

What it is not: the decoding. This module only builds the grammar text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import attrs

__all__ = ["Grammar", "build_grammar"]


@attrs.frozen
class Grammar:
    """A phrase list as vosk will see it.

    ``json`` is the grammar to hand vosk, or None when no phrase kept a single
    known word (then the utterance is decoded free-form). ``dropped_words``
    lists the words of the phrases that the model does not know.
    """

    phrases: tuple[str, ...]  # as asked for
    json: str | None
    dropped_words: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether vosk gets a grammar at all."""
        return self.json is not None


def build_grammar(phrases: Sequence[str], knows: Callable[[str], bool]) -> Grammar:
    """The grammar for ``phrases``, with words ``knows`` rejects left out.

    A word the model lacks is tried lower-cased too (Latin-script models use
    lower-case vocabularies). Phrases are split on any whitespace.
    """
    kept: dict[str, None] = {}  # ordered set
    dropped: dict[str, None] = {}
    for phrase in phrases:
        words = []
        for word in phrase.split():
            if knows(word):
                words.append(word)
            elif word.lower() != word and knows(word.lower()):
                words.append(word.lower())
            else:
                dropped[word] = None
        if words:
            kept[" ".join(words)] = None
    # ensure_ascii=False: with \uXXXX escapes vosk looks the escaped text up in its
    # vocabulary, finds nothing, and the grammar ends up empty.
    text = json.dumps(list(kept), ensure_ascii=False) if kept else None
    return Grammar(phrases=tuple(phrases), json=text, dropped_words=tuple(dropped))
