"""The rules of every class of a script in one matcher: keywords, sound-alikes, patterns, examples.

``RuleMatcher(intents, options)`` is built once per script (in the thread the
library fits in); ``match(text, allowed)`` classifies one reply:

1. the reply is analysed (``waihu_nlu.normalize``): spaced and compact text,
   where its gaps and punctuation were, and its core without edge fillers;
2. examples: the core equals an example's core (a dictionary look-up);
3. keywords: one Aho-Corasick automaton (``pyahocorasick``) holds every
   keyword of every class, by characters and by sound (``waihu_nlu.sound``);
   one pass over the compact reply and one over its sound code give every
   hit with its place. A sound-alike hit counts only for a keyword of
   ``MIN_SOUND_SYLLABLES`` or more, when at most ``MAX_SOUND_DIFFERENCE`` of
   its characters differ from the keyword's (a recogniser's slip: 在听 for
   再听; not other words of the same sound: 有异响 is no 有意向), when the
   stretch heard is not itself a keyword as written (of any class), and
   when it does not cut a written keyword hit in two (很满意 holds 满意, not
   很慢). A keyword hit of two or more Han characters that cuts a common
   word at its edge (``waihu_nlu.words``: 好的 in 说好的, 在哪 in 现在哪有钱)
   is no hit;
4. patterns: each class's regular expressions over the compact reply (or the
   spaced one when spaces count), compiled once; a pattern is searched only
   when its class matters for ``allowed`` and the reply holds one of the
   characters every match of it needs (``waihu_nlu.literals``: 是 for a
   pattern "(你|您)是" and what may follow, 号 or 点 for a time). One
   alternation of all the patterns was measured slower: Python's ``re``
   tries every branch at every position, 160 µs a reply for the 130
   patterns of a template, against 40 µs searched one by one and 10 µs
   with the character check;
5. every hit goes through the same filters: its form (no keyword spans
   punctuation; a Latin keyword is a whole word; a one-character keyword is
   a word of its own: said alone, repeated, between pauses or fillers, or
   right after 不/没/别 — "对", "对对", "好吧", "我觉得不行", not the 对 of
   对面); containment (a keyword inside a longer one found at the same place
   is part of it: 兴趣 in 不感兴趣) and repetition (不用不用, 不是不是 say it
   once); the class's exclusions; A-not-A questions (``waihu_nlu.negation``);
   then negation scope: an odd number of negators sends the hit to the
   keyword's negated class (``Keyword.negated``, else ``Intent.negated``),
   or drops it when there is none; a negator some hit's negation used up is
   no hit of its own (the 不是 of 倒也不是没兴趣 is no "no");
6. each class keeps its best hit; classes come back in the order of
   ``allowed``.

Scores (0–1): an example 1; a keyword or pattern the share of the reply's
core its match covers (the longest match wins within a class, ties go to the
class's earlier rule in script order); a sound-alike hit
``SOUND_ALIKE_FACTOR`` of that, so the written word wins a tie with its
homophone. ``Match.negated`` is True when negation decided the class: flipped
it (odd count) or restored it (double negation).

What it is not: the provider (``waihu_nlu.keywords``), and not a trained
model (``waihu_nlu.model``).

Error handling: a pattern or exclusion that is not a valid regular
expression raises ``ValueError`` naming the class and the pattern when the
matcher is built; a keyword or example that normalises to nothing is skipped
with a warning. ``match`` never raises on any text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Sequence

import ahocorasick
import attrs

from waihu.api import Intent, Match, MatchSource
from waihu_nlu.literals import needed_characters
from waihu_nlu.negation import (
    A_NOT_A_INFIXES,
    NEGATOR_CHARS,
    in_question_form,
    negator_after,
    negator_spans,
    repeats_refusal,
)
from waihu_nlu.normalize import (
    FILLER_CHARS,
    QUESTION,
    Reply,
    analyse,
    compact,
    has_latin_letter,
    is_latin_alnum,
    strip_fillers,
)
from waihu_nlu.sound import keyword_codes, sound_code
from waihu_nlu.words import cuts_word

__all__ = ["SOUND_ALIKE_FACTOR", "MatchOptions", "RuleMatcher", "word_of_its_own"]

log = logging.getLogger("waihu.nlu")

EXAMPLE_SCORE = 1.0  # an example matches the whole reply
# A keyword heard by its sound only (在 for 再) is a little less sure than the
# written word: its score is scaled by this, so the written word wins a tie.
SOUND_ALIKE_FACTOR = 0.9
# A keyword of one syllable has a dozen homophones in everyday words (的/得/地,
# 是/事/市): only keywords of at least this many syllables match by sound, not
# counting the particles at its end (好的, 是的, 对啊 are one syllable of meaning:
# 号的 of 中号的 is no 好的).
MIN_SOUND_SYLLABLES = 2
# Particles that end a keyword without adding a word of their own: 好的, 行啊, 是滴.
_END_PARTICLES = frozenset("的了啊呀吧呢嘛哦滴嘞啦哈呗")
# A class's one-character keyword said again (好好, 对对, 行行) and followed by a word
# is an adverb or "so" (好好学, 好好笑), not the yes said twice: such a keyword is a
# word of its own, like the one character, up to this many characters. A verb said
# twice (听听, 看看: no keyword 听 or 看) means "a little" and stays a plain keyword.
_MAX_REDUPLICATED = 3
# A recogniser's homophone slips are a character or so in a word (在听 for 再听,
# 性趣 for 兴趣); a stretch of reply that shares only the sound with most of a
# keyword is other words (有异响 is not 有意向, 午十 not 唔使): at most this share
# of a keyword's characters may differ in a sound-alike hit.
MAX_SOUND_DIFFERENCE = 0.5
# Characters that may stand right before a one-character keyword and still
# leave it a word of its own, negating it: 不行, 没错 is a keyword of its own.
_SINGLE_NEGATORS = frozenset("不没别")
_DELIMITERS = FILLER_CHARS  # stand between words like a pause does: 对啊对啊, 好吧
_REGEX_META = frozenset(".^$*+?{}[]\\|()")  # an exclusion with none of these is a phrase


# pyahocorasick finds a node's child by a linear search, and the root of an
# automaton of 2,000 Chinese keywords has a child for nearly every common
# character: 8 µs a reply. Spelt as two symbols each (a high part and a low
# byte, from disjoint alphabets, so a match still starts on a character), no
# node has more than 256 children: 1 µs, plus 1 µs to spell the reply.
_HIGH_SYMBOLS = 0xE000  # Private Use Area: 0x1100 high parts (code point >> 8) …
_LOW_SYMBOLS = _HIGH_SYMBOLS + 0x1100  # … then 256 low bytes
_SYMBOL_CACHE_LIMIT = 1 << 16  # characters remembered; rarer ones are spelt each time


class _TwoSymbols(dict[int, str]):
    """``str.translate`` table: a character's ordinal → its two-symbol spelling."""

    def __missing__(self, ordinal: int) -> str:
        spelt = chr(_HIGH_SYMBOLS + (ordinal >> 8)) + chr(_LOW_SYMBOLS + (ordinal & 0xFF))
        if len(self) < _SYMBOL_CACHE_LIMIT:
            self[ordinal] = spelt
        return spelt


_SYMBOLS = _TwoSymbols()


class _SoundSymbols(dict[int, str]):
    """``str.translate`` table: a character's ordinal → the two-symbol spelling of its sound
    code (``waihu_nlu.sound``): the reply's sound, spelt for the automaton in one pass."""

    def __missing__(self, ordinal: int) -> str:
        spelt = _SYMBOLS[ord(sound_code(chr(ordinal)))]
        if len(self) < _SYMBOL_CACHE_LIMIT:
            self[ordinal] = spelt
        return spelt


_SOUND_SYMBOLS = _SoundSymbols()


@attrs.frozen(kw_only=True)
class MatchOptions:
    """How replies and rules are compared (the classifiers' config keys of the same names)."""

    normalize_width: bool = True
    ignore_spaces: bool = True
    sound_alike: bool = True
    negation: bool = True


@attrs.frozen
class _Rule:
    """One keyword or pattern of one class."""

    intent: str  # the class it signals
    written: str  # as the script wrote it: reported in Match.matched
    spaced: str  # normalised (keywords)
    key: str  # normalised without spaces: what the character pass finds (keywords)
    length: int  # characters of its compact key (keywords)
    latin: bool  # a Latin word: whole words only
    single: bool  # one non-Latin character: a word of its own only
    infix: bool  # contains 不/没: may spell X不X
    plain: bool  # neither single nor latin: found anywhere, as written
    negated: str | None  # the class a negated hit counts for
    source: MatchSource
    order: int  # script order, for ties


class RuleMatcher:
    """Every rule of a script's intents, matched in one pass (see the module docstring)."""

    def __init__(self, intents: Sequence[Intent], options: MatchOptions) -> None:
        self.options = options
        self._rules: list[_Rule] = []
        self._examples: dict[str, list[tuple[str, str]]] = {}
        # every pattern: (its class, its negated class, rule id, pattern), in script
        # order; by each character one of which its every match needs, or always
        self._patterns: list[tuple[str, str | None, int, re.Pattern[str]]] = []
        self._patterns_by_character: dict[str, list[int]] = {}
        self._patterns_always: list[int] = []
        self._exclusions: dict[str, list[re.Pattern[str]]] = {}
        keys: dict[str, list[tuple[int, bool]]] = {}
        for intent in intents:
            self._add_intent(intent, keys)
        # every keyword as written: a stretch of reply that is one is not heard as another
        self._written = frozenset(
            key for key, entries in keys.items() if any(not sound for _, sound in entries)
        )
        self._automaton: ahocorasick.Automaton | None = None
        self._has_sound = any(sound for entries in keys.values() for _, sound in entries)
        if keys:
            automaton = ahocorasick.Automaton()
            for key, entries in keys.items():
                automaton.add_word(key.translate(_SYMBOLS), (len(key), tuple(entries)))
            automaton.make_automaton()
            self._automaton = automaton

    @property
    def rule_count(self) -> int:
        """Keywords and patterns fitted."""
        return len(self._rules)

    def core(self, text: str) -> str:
        """The compared form of a whole reply or example: normalised, edge fillers stripped."""
        core = strip_fillers(analyse(text, width=self.options.normalize_width).spaced)
        return compact(core) if self.options.ignore_spaces else core

    def match(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """The classes of ``allowed`` whose rules fire on ``text``, in the order of ``allowed``."""
        return self.match_core(text, allowed)[0]

    def match_core(self, text: str, allowed: Sequence[str]) -> tuple[list[Match], str]:
        """``match``, and the reply's ``core`` (computed on the way)."""
        reply = analyse(text, width=self.options.normalize_width)
        core = strip_fillers(reply.spaced)
        core_key = compact(core) if self.options.ignore_spaces else core
        wanted = set(allowed)
        if not reply.compact or not wanted:
            return [], core_key
        size = max(1, len(compact(core).replace(QUESTION, "")))
        # class → (score, rule order, Match fields): a Match is made for the winners only
        best: dict[str, tuple[float, int, str, bool, MatchSource]] = {}
        for name, written in self._examples.get(core_key, ()):
            if name in wanted and name not in best:
                best[name] = (EXAMPLE_SCORE, -1, written, False, "example")
        excluded: dict[str, list[tuple[int, int]]] = {}
        pattern_text = reply.compact if self.options.ignore_spaces else reply.spaced
        # every hit that survives the filters: (rule, start, end, by sound, class, negated)
        kept: list[tuple[_Rule, int, int, bool, str | None, bool]] = []
        consumed: list[tuple[int, int]] = []  # negators some hit's negation used up
        for rule_id, start, end, sound in self._hits(reply, pattern_text, wanted):
            rule = self._rules[rule_id]
            if rule.intent not in wanted and rule.negated not in wanted:
                continue
            if rule.intent in self._exclusions:
                spans = excluded.get(rule.intent)
                if spans is None:
                    spans = excluded[rule.intent] = self._exclusion_spans(
                        rule.intent, reply, pattern_text
                    )
                if any(a <= start and end <= b for a, b in spans):
                    continue
            target, negated, negators = self._target(rule, reply, start, end)
            consumed.extend(negators)
            kept.append((rule, start, end, sound, target, negated))
        for rule, start, end, sound, target, negated in kept:
            if target is None or target not in wanted:
                continue
            # a negator that negates another hit is part of that negation, not a word of
            # its own: the 不是 of 倒也不是没兴趣, the 没有 of 没有不感兴趣
            if consumed and any(a <= start and end <= b for a, b in consumed):
                continue
            score = min(1.0, (end - start) / size) * (SOUND_ALIKE_FACTOR if sound else 1.0)
            held = best.get(target)
            # the higher score, then the earlier rule; an example (1.0, order -1) holds
            if held is None or (score, -rule.order) > (held[0], -held[1]):
                best[target] = (score, rule.order, rule.written, negated, rule.source)
        matches: list[Match] = []
        if len(best) == 1:  # the usual case: no order to keep
            name, (score, _, written, negated, source) = best.popitem()
            matches.append(Match(name, score, written, negated=negated, source=source))
        elif best:
            for name in allowed:
                found = best.pop(name, None)  # popped: a name repeated in allowed comes once
                if found is not None:
                    score, _, written, negated, source = found
                    matches.append(Match(name, score, written, negated=negated, source=source))
        return matches, core_key

    # ── fitting ──

    def _add_intent(self, intent: Intent, keys: dict[str, list[tuple[int, bool]]]) -> None:
        opts = self.options
        name = intent.name
        for exclusion in intent.exclusions:
            self._exclusions.setdefault(name, []).append(self._exclusion(name, exclusion))
        singles = {
            key
            for keyword in intent.keywords
            if len(key := analyse(keyword.text, width=opts.normalize_width).compact) == 1
        }
        for keyword in intent.keywords:
            reply = analyse(keyword.text, width=opts.normalize_width)
            if not reply.compact:
                log.warning(
                    "intent %r: keyword %r is empty after normalisation; skipped",
                    name,
                    keyword.text,
                )
                continue
            latin = has_latin_letter(reply.spaced)
            rule_id = len(self._rules)
            self._rules.append(
                _Rule(
                    intent=name,
                    written=keyword.text,
                    spaced=reply.spaced,
                    key=reply.compact,
                    length=len(reply.compact),
                    latin=latin,
                    single=not latin and word_of_its_own(reply.compact, singles),
                    infix=any(c in A_NOT_A_INFIXES for c in reply.compact),
                    plain=not latin and not word_of_its_own(reply.compact, singles),
                    negated=keyword.negated if keyword.negated is not None else intent.negated,
                    source="keyword",
                    order=rule_id,
                )
            )
            keys.setdefault(reply.compact, []).append((rule_id, False))
            sound = keyword.sound_alike if keyword.sound_alike is not None else intent.sound_alike
            if (
                opts.sound_alike
                and sound
                and not latin
                and len(reply.compact.rstrip("".join(_END_PARTICLES))) >= MIN_SOUND_SYLLABLES
            ):
                for code in keyword_codes(reply.compact):
                    keys.setdefault(code, []).append((rule_id, True))
        for pattern in intent.patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"intent {name!r}: pattern {pattern!r} is not a regular expression: {exc}"
                ) from None
            rule_id = len(self._rules)
            self._rules.append(
                _Rule(
                    intent=name,
                    written=pattern,
                    spaced="",
                    key="",
                    length=0,
                    latin=False,
                    single=False,
                    infix=False,
                    plain=False,
                    negated=intent.negated,
                    source="pattern",
                    order=rule_id,
                )
            )
            number = len(self._patterns)
            self._patterns.append((name, intent.negated, rule_id, compiled))
            needed = needed_characters(compiled)
            if needed is None:
                self._patterns_always.append(number)
            for char in sorted(needed or ()):
                self._patterns_by_character.setdefault(char, []).append(number)
        for phrase in intent.examples:
            key = self.core(phrase)
            if not key.strip():
                log.warning(
                    "intent %r: example %r is empty after normalisation; skipped", name, phrase
                )
                continue
            self._examples.setdefault(key, []).append((name, phrase))

    def _exclusion(self, name: str, exclusion: str) -> re.Pattern[str]:
        if not any(c in _REGEX_META for c in exclusion):
            reply = analyse(exclusion, width=self.options.normalize_width)
            phrase = reply.compact if self.options.ignore_spaces else reply.spaced
            return re.compile(re.escape(phrase))
        try:
            return re.compile(exclusion)
        except re.error as exc:
            raise ValueError(
                f"intent {name!r}: exclusion {exclusion!r} is not a regular expression: {exc}"
            ) from None

    # ── matching ──

    def _hits(
        self, reply: Reply, pattern_text: str, wanted: set[str]
    ) -> list[tuple[int, int, int, bool]]:
        """(rule id, start, end, by sound) of every keyword and pattern occurrence.

        Positions index ``reply.compact``. Keyword hits are checked for form
        and containment here; the other filters are the caller's.
        """
        text = reply.compact
        found: list[tuple[int, int, int, bool]] = []
        automaton = self._automaton
        if automaton is not None:
            spelt = text.translate(_SYMBOLS)
            for last, (length, entries) in automaton.iter(spelt):
                end = (last + 1) // 2
                for rule_id, sound in entries:
                    if not sound and self._keyword_fits(rule_id, reply, text, end - length, end):
                        start = end - length
                        # 好的 in 说好的, 在哪 in 现在哪有钱; but 不能 before 能来 is the
                        # negation, which decides the hit's class, not a word it cuts
                        negated = start > 0 and text[start - 1] in NEGATOR_CHARS
                        if self._rules[rule_id].plain and cuts_word(
                            text, start, end, keep_start=negated
                        ):
                            continue
                        found.append((rule_id, end - length, end, False))
            if self._has_sound:
                heard = text.translate(_SOUND_SYMBOLS)
                if heard != spelt:  # else nothing in the reply has a pinyin reading
                    coded = ""
                    written = self._written
                    for last, (length, entries) in automaton.iter(heard):
                        end = (last + 1) // 2
                        start = end - length
                        said = text[start:end]
                        # a keyword as written (the word itself, or another class's
                        # word: 在听 is not 再听 when 在听 is listed) is read as written
                        if said in written:
                            continue
                        for rule_id, sound in entries:
                            if (
                                sound
                                and _sounds_like(self._rules[rule_id].key, said)
                                and not cuts_word(text, start, end)  # 不值 in 不知道
                            ):
                                coded = coded or sound_code(text)
                                if self._keyword_fits(rule_id, reply, coded, start, end):
                                    found.append((rule_id, start, end, True))
        if len(found) > 1:
            # A word written in the reply beats a sound-alike reading that overlaps it
            # without holding it: 很满意 holds 满意, not 很慢; 不知道 not 不值.
            written_hits = [(a, b) for _, a, b, sound in found if not sound]
            if len(written_hits) < len(found) and written_hits:
                found = [
                    hit
                    for hit in found
                    if not hit[3]
                    or not any(
                        a < hit[2] and hit[1] < b and not (hit[1] <= a and b <= hit[2])
                        for a, b in written_hits
                    )
                ]
        if len(found) > 1:
            # A keyword inside a longer one found at the same place is part of that
            # word, not a word of its own (兴趣 in 不感兴趣); a keyword right after
            # itself is a repetition (不用不用, 不是不是) that the first one already says.
            found = [
                (rule_id, start, end, sound)
                for rule_id, start, end, sound in found
                if not any(
                    (a <= start and end <= b and b - a > end - start)
                    or (r == rule_id and _repeats(text, a, b, start))
                    for r, a, b, _ in found
                )
            ]
        # A pattern is searched for only when the reply holds a character every
        # match of it needs, and its class matters for ``allowed``: most are not.
        candidates = set(self._patterns_always)
        index = self._patterns_by_character
        for char in set(pattern_text):
            candidates.update(index.get(char, ()))
        for number in sorted(candidates):  # script order
            name, negated, rule_id, pattern = self._patterns[number]
            if name not in wanted and negated not in wanted:
                continue
            for start, end in self._spans(pattern, reply, pattern_text):
                found.append((rule_id, start, end, False))
        return found

    def _keyword_fits(self, rule_id: int, reply: Reply, text: str, start: int, end: int) -> bool:
        """Whether a keyword found at ``text[start:end]`` stands as its kind requires."""
        rule = self._rules[rule_id]
        if reply.plain and rule.plain and self.options.ignore_spaces:
            return True  # the common case: no pause in the reply, nothing to check
        if end - start > 1 and any(reply.break_before[start + 1 : end]):
            return False  # punctuation inside: "不，感兴趣" holds no 不感兴趣
        if rule.single:
            return _alone(reply, text, start)
        if rule.latin or not self.options.ignore_spaces:
            spaced = reply.spaced
            first, last = reply.to_spaced[start], reply.to_spaced[end - 1] + 1
            if spaced[first:last] != rule.spaced:
                return False
            if rule.latin:
                if (
                    is_latin_alnum(rule.spaced[0])
                    and first > 0
                    and is_latin_alnum(spaced[first - 1])
                ):
                    return False
                if (
                    is_latin_alnum(rule.spaced[-1])
                    and last < len(spaced)
                    and is_latin_alnum(spaced[last])
                ):
                    return False
        return True

    def _target(
        self, rule: _Rule, reply: Reply, start: int, end: int
    ) -> tuple[str | None, bool, list[tuple[int, int]]]:
        """The class a hit counts for after A-not-A and negation, whether negation decided,
        and the negators it used up."""
        text = reply.compact
        if in_question_form(text, start, end, reply.break_before):
            return None, False, []
        if rule.infix and repeats_refusal(text, start, end):
            return None, False, []
        if not self.options.negation:
            return rule.intent, False, []
        spans = negator_spans(text, start, reply.break_before)
        after = negator_after(text, end, reply.break_before)
        if after is not None:
            spans = [*spans, after]
        if len(spans) % 2:
            return rule.negated, True, spans
        return rule.intent, bool(spans), spans

    def _exclusion_spans(self, name: str, reply: Reply, pattern_text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for exclusion in self._exclusions[name]:
            spans.extend(self._spans(exclusion, reply, pattern_text, overlapping=True))
        return spans

    def _spans(
        self,
        pattern: re.Pattern[str],
        reply: Reply,
        pattern_text: str,
        *,
        overlapping: bool = False,
    ) -> Iterator[tuple[int, int]]:
        """Non-empty matches of ``pattern`` in ``pattern_text``, as spans of ``reply.compact``.

        ``overlapping`` also finds a match starting inside the previous one
        (an exclusion "不用不用" in "不用不用不用" covers both pairs).
        """
        at = 0
        while at <= len(pattern_text):
            found = pattern.search(pattern_text, at)
            if found is None:
                return
            start, end = found.span()
            if end > start:
                if pattern_text is reply.compact:
                    yield start, end
                else:
                    yield _to_compact(reply, start), _to_compact(reply, end - 1) + 1
            at = start + 1 if overlapping or end == start else end


def word_of_its_own(key: str, singles: Collection[str]) -> bool:
    """Whether the keyword ``key`` (compact) counts only as a word of its own: one
    character, or a keyword of ``singles`` (its class's one-character keywords) said
    again (好好 where 好 is one, 对对对)."""
    return len(key) == 1 or (
        len(key) <= _MAX_REDUPLICATED and len(set(key)) == 1 and key[0] in singles
    )


def _sounds_like(key: str, said: str) -> bool:
    """Whether ``said`` (a stretch of reply of ``key``'s sound) differs from the written
    ``key`` in few enough characters to be a slip of the recogniser."""
    differ = sum(a != b for a, b in zip(key, said, strict=True))
    return 0 < differ <= len(key) * MAX_SOUND_DIFFERENCE


def _repeats(text: str, first: int, first_end: int, start: int) -> bool:
    """Whether a match at ``start`` repeats the same keyword's match ``text[first:first_end]``:
    right after it (好的好的), or with the same negator before each (不是不是)."""
    return first_end == start or (
        first_end == start - 1 and first > 0 and text[first - 1] == text[start - 1]
    )


def _to_compact(reply: Reply, spaced_index: int) -> int:
    """The index in ``reply.compact`` of the character at (or the first after) ``spaced_index``."""
    for i, at in enumerate(reply.to_spaced):
        if at >= spaced_index:
            return i
    return len(reply.compact)


def _alone(reply: Reply, text: str, start: int) -> bool:
    """Whether the one character at ``text[start]`` is a word of its own.

    Said once or repeated (对对), with a pause, a filler or the reply's edge on
    both sides; on the left, 不/没/别 may stand instead (不行, then negated),
    and a repeated refusal holds one word each time (不行不行).
    A question mark right after makes it a question ("嗯？"), not the word.
    """
    real = reply.compact
    gaps = reply.gap_before
    char = text[start]
    first, end = start, start + 1
    while first > 0 and text[first - 1] == char:
        first -= 1
    while end < len(text) and text[end] == char:
        end += 1
    if end < len(real) and real[end] == QUESTION:
        return False
    if not (
        end == len(real)
        or gaps[end]
        or real[end] in _DELIMITERS
        # a repeated refusal: the first 行 of 不行不行 (not of 行不行, a question)
        or (
            real[end] in _SINGLE_NEGATORS
            and end + 1 < len(text)
            and text[end + 1] == char
            and first > 0
            and real[first - 1] == real[end]
        )
    ):
        return False
    if first == 0 or gaps[first] or real[first - 1] in _DELIMITERS:
        return True
    # 不行, 我觉得不行, 不是不行: the negator decides what the word counts for
    return real[first - 1] in _SINGLE_NEGATORS
