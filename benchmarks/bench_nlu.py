"""Reply classification figures for the waihu_nlu classifiers: classifications per second.

Run: ``.venv/bin/python benchmarks/bench_nlu.py [--replies N] [--seconds S]``.
Prints, for scripts of 300 and 2,000 keywords (19 classes, two patterns and
three examples each), the fit time and the classifications per second on one
core (process CPU time, so other work on the host counts less) of:

- ``keywords`` (rules only: negation, A-not-A, exclusions, sound-alikes);
- ``keywords`` with ``sound_alike = false`` (the cost of the pinyin pass);
- ``trained`` (the same rules; replies no rule catches also go to the model).

Keywords are 2–4 characters drawn from the 3,755 common characters of
GB 2312 level 1, with a fixed seed, plus the usual sales words; replies are
realistic in shape: fillers, a keyword (a third of them under a negator, some
in an A-not-A question), other words, a question mark now and then, and a
third with no keyword at all. The target is ≥ 20,000 classifications/s at
2,000 keywords.

What it is not: a test; nothing here asserts. An accuracy figure is
``benchmarks/nlu_eval.py``'s.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import trio

from waihu.api import Intent, Keyword, ProviderContext
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.trained import TrainedClassifier

SEED = 6  # fixed: the same keywords and replies every run
CLASSES = 19  # a sales script of the size
PATTERNS_PER_CLASS = 2
EXAMPLES_PER_CLASS = 3
KEYWORD_COUNTS = (300, 2000)

SALES_WORDS = {
    "affirm": ["好的", "可以", "行", "没问题", Keyword("感兴趣", negated="deny")],
    "deny": ["不需要", "不用", "不要", "没兴趣"],
    "busy": ["在忙", "开车", "开会"],
    "kb.price": ["多少钱", "价格"],
}
FILLERS_BEFORE = ["", "", "嗯", "那个", "啊", "就是"]
FILLERS_AFTER = ["", "", "吧", "呢", "啊", "？"]
NEGATORS = ["不", "没", "不是很", "没太大", "不怎么"]


def common_characters() -> list[str]:
    """The 3,755 level-1 characters of GB 2312 (the most used), in table order."""
    chars = []
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            try:
                chars.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue  # the table's last row is not full
    return chars


def make_intents(keywords: int, rng: random.Random, chars: list[str]) -> list[Intent]:
    """A script of CLASSES classes sharing ``keywords`` keywords between them."""
    names = [*SALES_WORDS, *(f"class{i}" for i in range(CLASSES - len(SALES_WORDS)))]
    words: dict[str, list[str | Keyword]] = {
        name: list(SALES_WORDS.get(name, [])) for name in names
    }
    seen = {w if isinstance(w, str) else w.text for ws in words.values() for w in ws}
    while sum(len(ws) for ws in words.values()) < keywords:
        word = "".join(rng.choices(chars, k=rng.choice((2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words[rng.choice(names)].append(word)
    intents = []
    for name in names:
        plain = [w for w in words[name] if isinstance(w, str)]
        patterns = tuple(
            f"{rng.choice(chars)}.{{0,4}}{rng.choice(chars)}" for _ in range(PATTERNS_PER_CLASS)
        )
        examples = tuple(
            "".join(rng.sample(plain, k=min(2, len(plain)))) for _ in range(EXAMPLES_PER_CLASS)
        )
        negated = {"affirm": "deny", "deny": "affirm"}.get(name)
        intents.append(
            Intent(name, keywords=tuple(words[name]), patterns=patterns, examples=examples,
                   negated=negated)
        )  # fmt: skip
    return intents


def make_replies(
    count: int, intents: list[Intent], rng: random.Random, chars: list[str]
) -> list[str]:
    """``count`` replies shaped like a callee's (see the module docstring)."""
    keywords = [k.text for i in intents for k in i.keywords]
    replies = []
    for n in range(count):
        other = "".join(rng.choices(chars, k=rng.randint(0, 6)))
        kind = n % 3
        if kind == 0:  # no keyword
            body = "".join(rng.choices(chars, k=rng.randint(2, 10)))
        elif kind == 1:  # a keyword, maybe with another
            body = rng.choice(keywords) + other
        else:  # negated, or an A-not-A question
            word = rng.choice(keywords)
            body = (
                rng.choice(NEGATORS) + word if rng.random() < 0.7 else word[0] + "不" + word + other
            )
        replies.append(rng.choice(FILLERS_BEFORE) + body + rng.choice(FILLERS_AFTER))
    return replies


def rate(
    classifier: KeywordClassifier, replies: list[str], allowed: list[str], seconds: float
) -> float:
    """Classifications per second over ``replies`` (cycled) for about ``seconds``."""
    done = 0
    started = time.process_time()
    while True:
        for reply in replies:
            classifier.classify(reply, allowed)
        done += len(replies)
        elapsed = time.process_time() - started
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=2000, help="distinct replies (default 2000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (default 2)")
    args = parser.parse_args()
    context = ProviderContext(
        name="bench",
        state_dir=Path("."),
        log=logging.getLogger("waihu.nlu.bench"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    chars = common_characters()
    # the trained type imports scikit-learn on its first fit (a second or two, once
    # per process): paid here, so the fit figures are the fits'
    import sklearn.linear_model  # noqa: F401

    for count in KEYWORD_COUNTS:
        rng = random.Random(SEED)
        intents = make_intents(count, rng, chars)
        replies = make_replies(args.replies, intents, rng, chars)
        allowed = [i.name for i in intents]
        setups: list[tuple[str, KeywordClassifier]] = [
            ("keywords", KeywordClassifier(KeywordClassifier.Config(), context)),
            (
                "keywords, no sound-alike",
                KeywordClassifier(KeywordClassifier.Config(sound_alike=False), context),
            ),
            ("trained", TrainedClassifier(TrainedClassifier.Config(), context)),
        ]
        for label, classifier in setups:
            started = time.process_time()
            classifier.fit(intents)
            fitted = time.process_time() - started
            unmatched = sum(1 for r in replies if not classifier.classify(r, allowed))
            per_second = rate(classifier, replies, allowed, args.seconds)
            print(
                f"{count:5d} keywords  {label:26s} fit {fitted * 1000:7.1f} ms  "
                f"{per_second:9,.0f} classifications/s  ({1e6 / per_second:6.1f} µs each, "
                f"{unmatched * 100 // len(replies)} % unmatched)"
            )


if __name__ == "__main__":
    main()
