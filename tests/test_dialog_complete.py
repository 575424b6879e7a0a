"""``waihu.dialog.complete``: which partial recognitions are confident, complete answers.

Real scripts (TOML through ``load_script``) and the real ``keywords``
classifier, as a call has them; texts in Korean (spaced as vosk gives them)
and Chinese.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from waihu.api import Classifier, ProviderContext
from waihu.dialog.complete import answer_judge, complete_answer
from waihu.dialog.script import Node, Script, load_script

KOREAN = """
[script]
language = "ko"
start = "offer"
always = ["dnc"]
priority = ["kb", "affirm", "deny", "again", "default"]  # deny is heard at only_yes too

[handlers]
repeat = "again"

[intents.affirm]
keywords = ["네", "예", "좋아요", "그래요"]

[intents.deny]
keywords = ["아니요", "아니", "필요 없어요", "싫어요"]

[intents.again]
keywords = ["뭐라고요"]

[intents.dnc]
keywords = ["전화하지 마세요", "다시는 전화하지 마세요"]

[nodes.offer]
say = [{ text = "소개해 드려도 될까요?" }]
on = { affirm = "yes", deny = "no", dnc = "no", default = "only_yes" }

[nodes.only_yes]
say = [{ text = "네 라고 해 주세요" }]
on = { affirm = "yes", dnc = "no", default = "no" }

[nodes.yes]
say = [{ text = "감사합니다" }]
end = true

[nodes.no]
say = [{ text = "알겠습니다" }]
end = true

[kb.price]
keywords = ["가격", "얼마"]
say = [{ text = "만 원입니다" }]
"""

CHINESE = """
[script]
language = "zh"
start = "offer"

[intents.affirm]
keywords = ["可以", "好的", "需要", "行", "对"]
negated = "deny"

[intents.deny]
keywords = ["不需要", "不用", "没兴趣"]

[nodes.offer]
say = [{ text = "需要给您介绍一下吗？" }]
on = { affirm = "yes", deny = "no", default = "wants_yes" }

[nodes.wants_yes]
say = [{ text = "您需要吗？" }]
on = { affirm = "yes", default = "no" }

[nodes.yes]
say = [{ text = "好的" }]
end = true

[nodes.no]
say = [{ text = "再见" }]
end = true
"""

Judge = Callable[[str, str], bool]


@pytest.fixture
def judge(tmp_path: Path, provider_types: dict) -> Callable[[str], Judge]:
    """``judge(script_text)(text, node_name)``: complete_answer with the real classifier."""

    def make(text: str) -> Judge:
        path = tmp_path / "script.toml"
        path.write_text(text, encoding="utf-8")
        script = load_script(path, check_recordings=False)
        cls = provider_types["nlu"]["keywords"]
        context = ProviderContext(
            name="default",
            state_dir=tmp_path,
            log=logging.getLogger("t"),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        classifier: Classifier = cls(cls.Config(), context)
        classifier.fit(script.intents)
        bound = answer_judge(script, classifier)

        def at(reply: str, node: str) -> bool:
            assert bound(reply, script.nodes[node]) == complete_answer(
                reply, script.nodes[node], classifier, script
            )
            return bound(reply, script.nodes[node])

        return at

    return make


@pytest.mark.parametrize(
    "text",
    [
        "네",
        "예",
        "네 네",
        "네 좋아요",
        "아니요",
        "아니요 싫어요",
        "뭐라고요",
        "얼마",
        "전화하지 마세요",
    ],
)
def test_korean_short_answers_are_complete(judge: Callable[[str], Judge], text: str) -> None:
    assert judge(KOREAN)(text, "offer")


@pytest.mark.parametrize(
    "text",
    [
        "네 그런데",  # goes on: "but"
        "그런데 네",
        "좋아요 근데",  # "good, but"
        "네 가격이 얼마 예요 그리고",  # too long to be a plain answer
        "네 아니요",  # two answers that disagree
        "다시는 전화하지 마세요",  # wholly a keyword, but a sentence: the full window
        "음",  # nothing the node answers
        "",
        "   ",
    ],
)
def test_korean_texts_that_go_on_or_say_nothing_are_not(
    judge: Callable[[str], Judge], text: str
) -> None:
    assert not judge(KOREAN)(text, "offer")


def test_a_class_the_node_does_not_answer_is_not_complete(judge: Callable[[str], Judge]) -> None:
    at = judge(KOREAN)
    assert at("아니요", "offer")
    assert not at("아니요", "only_yes")  # only the default route would take it
    assert at("네", "only_yes")


@pytest.mark.parametrize("text", ["可以", "好的", "需要", "不需要", "不用", "好的 可以", "可以啊"])
def test_chinese_short_answers_are_complete(judge: Callable[[str], Judge], text: str) -> None:
    assert judge(CHINESE)(text, "offer")


@pytest.mark.parametrize(
    "text",
    [
        "可以考虑一下",  # a keyword inside a longer sentence
        "我觉得需要再想想",
        "可以 但是",  # goes on
        "不 需要",  # heard as two words: "需要" alone says the opposite
        "好的 不用",
    ],
)
def test_chinese_keywords_inside_more_are_not_complete(
    judge: Callable[[str], Judge], text: str
) -> None:
    assert not judge(CHINESE)(text, "offer")


def test_a_negated_keyword_is_complete_as_the_refusal_never_as_the_keyword(
    judge: Callable[[str], Judge],
) -> None:
    at = judge(CHINESE)
    assert at("需要", "wants_yes")
    # "不需要" holds 需要, but is a refusal: the node routes no refusal, so it is no
    # complete answer there (and where refusals route, it is one, as a refusal)
    assert not at("不需要", "wants_yes")
    assert at("不需要", "offer")


def test_the_judge_needs_a_node_of_the_script(judge: Callable[[str], Judge]) -> None:
    with pytest.raises(KeyError):
        judge(KOREAN)("네", "nowhere")


def test_node_type_is_the_scripts(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(KOREAN, encoding="utf-8")
    script: Script = load_script(path, check_recordings=False)
    assert isinstance(script.nodes["offer"], Node)
