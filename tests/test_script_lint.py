"""``waihu.dialog.lint``: the warnings of ``waihuctl script validate``.

Each test writes a small Chinese script that loads (the loader's own errors
are not lint's business), changes one thing, and checks the finding: its
severity, the file and line it names, the key and the message. The clean
script gives no finding at all, so every finding is one the change caused.
"""

from __future__ import annotations

import wave
from pathlib import Path

from waihu.dialog.lint import Finding, lint
from waihu.dialog.script import load_script

from conftest import SCRIPTS

BASE = """\
[script]
name = "lint-demo"
language = "zh"
start = "greeting"
priority = ["kb", "affirm", "deny", "busy"]
always = ["dnc"]

[variables]
company = "平安"

[handlers.no_input]
limit = 2
then = "bye_silence"

[handlers.no_match]
limit = 3
then = "bye_no"

[handlers.on]
dnc = { dnc = true, say = [{ text = "好的，不再打扰。" }], hangup = true }

[intents.affirm]
keywords = ["可以", "感兴趣"]

[intents.deny]
keywords = ["不感兴趣", "不用"]

[intents.busy]
keywords = ["在开车", "开会"]

[intents.dnc]
keywords = ["别再打"]

[nodes.greeting]
say = [{ text = "您好，我是{company}的客服，想给您介绍一款产品，您感兴趣吗？" }]
on = { affirm = "bye_yes", deny = "bye_no", busy = "hold", default = "repeat" }

[nodes.hold]
say = [{ text = "那您方便的时候再说，可以吗？" }]
on = { affirm = "bye_yes", default = "bye_no" }

[nodes.bye_yes]
say = [{ text = "好的，稍后联系您。" }]
end = true
grade = "A"

[nodes.bye_no]
say = [{ text = "打扰了。" }]
end = true
grade = "C"

[nodes.bye_silence]
say = [{ text = "再见。" }]
end = true
grade = "D"

[kb.price]
keywords = ["多少钱"]
say = [{ text = "每月十元。" }]
then = "repeat"
"""


def findings(tmp_path: Path, text: str) -> tuple[Path, list[Finding]]:
    path = tmp_path / "lint-demo.toml"
    path.write_text(text, encoding="utf-8")
    return path, lint(load_script(path))


def line_of(text: str, start: str) -> int:
    """The number of the first line of ``text`` starting with ``start``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def changed(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_a_clean_script_has_no_findings(tmp_path: Path) -> None:
    assert findings(tmp_path, BASE)[1] == []


def test_the_demo_script_is_clean() -> None:
    assert lint(load_script(SCRIPTS / "demo-ko.toml")) == []


def test_a_finding_reads_file_line_warning_key_message(tmp_path: Path) -> None:
    finding = Finding(severity="warning", file=tmp_path / "a.toml", line=7, key="nodes.x",
                      message="dead end")  # fmt: skip
    assert str(finding) == f"{tmp_path / 'a.toml'}:7: warning: nodes.x: dead end"
    error = Finding(severity="error", file=Path("a.toml"), line=None, key="k", message="m")
    assert str(error) == "a.toml: k: m"
    assert error.as_dict() == {"severity": "error", "file": "a.toml", "line": None,
                               "key": "k", "message": "m"}  # fmt: skip


# ───────────────────────── flow ─────────────────────────


def test_a_node_no_reply_leads_out_of_is_a_dead_end(tmp_path: Path) -> None:
    text = changed(('on = { affirm = "bye_yes", default = "bye_no" }',
                    'on = { affirm = "listen", default = "repeat" }'))  # fmt: skip
    path, found = findings(tmp_path, text)
    assert [(f.severity, f.file, f.line, f.key) for f in found] == [
        ("warning", path, line_of(text, "[nodes.hold]"), "nodes.hold")
    ]
    assert found[0].message.startswith("dead end: no reply leads out of this node")


def test_a_route_that_hangs_up_is_a_way_out(tmp_path: Path) -> None:
    text = changed(('on = { affirm = "bye_yes", default = "bye_no" }',
                    'on = { affirm = { hangup = true }, default = "repeat" }'))  # fmt: skip
    assert findings(tmp_path, text)[1] == []


# ───────────────────────── recordings ─────────────────────────


def write_wav(path: Path, frames: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(frames)


def test_a_recording_that_does_not_decode_is_an_error(tmp_path: Path) -> None:
    write_wav(tmp_path / "good.wav", b"\x01\x00" * 800)
    (tmp_path / "bad.wav").write_bytes(b"this is not a WAV file at all")
    write_wav(tmp_path / "empty.wav", b"")
    text = changed(
        ('say = [{ text = "每月十元。" }]',
         'say = [{ text = "每月十元。", recording = "bad.wav" }]'),
        ('say = [{ text = "再见。" }]', 'say = [{ text = "再见。", recording = "empty.wav" }]'),
        ('say = [{ text = "打扰了。" }]', 'say = [{ text = "打扰了。", recording = "good.wav" }]'),
    )  # fmt: skip
    path, found = findings(tmp_path, text)
    assert [(f.severity, f.line, f.key) for f in found] == [
        ("error", line_of(text, 'say = [{ text = "再见'), "nodes.bye_silence.say[0].recording"),
        ("error", line_of(text, 'say = [{ text = "每月'), "kb.price.say[0].recording"),
    ]
    assert found[0].message == f"prompt {tmp_path / 'empty.wav'}: contains no audio"
    assert found[1].message.startswith(f"prompt {tmp_path / 'bad.wav'}: ")
    assert lint(load_script(path), decode_recordings=False) == []


# ───────────────────────── variables ─────────────────────────


def test_a_placeholder_without_a_default_needs_every_contact_to_have_it(tmp_path: Path) -> None:
    text = changed(('"您好，我是', '"{name}您好，我是'))
    path, found = findings(tmp_path, text)
    line = line_of(text, 'say = [{ text = "{name}')
    assert [str(f) for f in found] == [
        f"{path}:{line}: warning: nodes.greeting.say[0]: "
        "{name} has no [variables] default and no node sets it: "
        "needs every contact to have 'name'"
    ]


def test_a_blank_default_is_no_default(tmp_path: Path) -> None:
    text = changed(('company = "平安"', 'company = " "'))
    _path, found = findings(tmp_path, text)
    assert [(f.key, f.message.split(": ")[-1]) for f in found] == [
        ("nodes.greeting.say[0]", "needs every contact to have 'company'")
    ]


def test_a_placeholder_with_a_default_or_set_by_a_node_is_fine(tmp_path: Path) -> None:
    with_default = changed(
        ('"您好，我是', '"{name}您好，我是'),
        ('company = "平安"', 'company = "平安"\nname = "先生"'),
    )
    assert findings(tmp_path, with_default)[1] == []
    set_by_a_route = changed(
        ('"那您方便', '"{stage}，那您方便'),
        ('busy = "hold"', 'busy = { goto = "hold", set = { stage = "忙" } }'),
    )
    assert findings(tmp_path, set_by_a_route)[1] == []


# ───────────────────────── keywords ─────────────────────────


def test_the_same_keyword_in_two_classes_of_a_tier(tmp_path: Path) -> None:
    text = changed(('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "开会", "可以"]'))
    path, found = findings(tmp_path, text)
    line = line_of(text, 'keywords = ["在开车')
    assert [str(f) for f in found] == [
        f"{path}:{line}: warning: intents.busy.keywords: "
        "'可以' is also a keyword of 'affirm', which comes first at node 'greeting': "
        "'busy' never gets it there"
    ]


def test_the_same_example_in_two_classes_of_a_tier(tmp_path: Path) -> None:
    text = changed(
        ('keywords = ["可以", "感兴趣"]', 'keywords = ["可以", "感兴趣"]\nexamples = ["嗯，说吧"]'),
        ('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "开会"]\nexamples = ["嗯，说吧"]'),
    )
    _path, found = findings(tmp_path, text)
    assert [(f.line, f.key, f.message) for f in found] == [
        (
            line_of(text, "[intents.busy]") + 2,  # busy's examples line
            "intents.busy.examples",
            "'嗯，说吧' is also an example of 'affirm', which comes first at node 'greeting': "
            "'busy' never gets it there",
        )
    ]


def test_the_same_keyword_in_another_tier_is_fine(tmp_path: Path) -> None:
    # dnc is in the always tier: it takes "不用" first by design, wherever asked
    text = changed(('keywords = ["别再打"]', 'keywords = ["别再打", "不用"]'))
    assert findings(tmp_path, text)[1] == []


def test_a_keyword_inside_another_without_negation_between(tmp_path: Path) -> None:
    text = changed(('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "可以晚点打"]'))
    _path, found = findings(tmp_path, text)
    assert [(f.line, f.key) for f in found] == [
        (line_of(text, 'keywords = ["在开车'), "intents.busy.keywords")
    ]
    assert found[0].message == (
        "'可以晚点打' (busy) contains '可以' (affirm) and no negation rule separates them: "
        "at node 'greeting', where 'affirm' comes first, a reply saying '可以晚点打' is taken "
        "for 'affirm'; put 'busy' first there, or give 'affirm' the exclusion '可以晚点打'"
    )


def test_a_one_character_keyword_is_a_word_of_its_own_never_inside_another(
    tmp_path: Path,
) -> None:
    # the classifier takes "好" only said alone (or right after 不/没/别): never in "好忙"
    text = changed(
        ('keywords = ["可以", "感兴趣"]', 'keywords = ["可以", "感兴趣", "好"]'),
        ('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "好忙"]'),
    )
    assert findings(tmp_path, text)[1] == []


def test_a_keyword_inside_one_of_a_class_that_comes_first_is_fine(tmp_path: Path) -> None:
    text = changed(
        ('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "可以晚点打"]'),
        ('"kb", "affirm", "deny", "busy"', '"kb", "busy", "affirm", "deny"'),
    )  # fmt: skip
    assert findings(tmp_path, text)[1] == []


def test_a_node_extra_overrides_a_class_on_purpose(tmp_path: Path) -> None:
    # at hold, "开会" means yes (a meeting time offered): the node says so itself
    text = changed(('on = { affirm = "bye_yes", default = "bye_no" }',
                    'keywords = { affirm = ["开会", "开会前"] }\n'
                    'on = { affirm = "bye_yes", busy = "bye_no", default = "bye_no"}'))  # fmt: skip
    assert findings(tmp_path, text)[1] == []


def test_a_negated_keyword_separated_by_the_negation_rule_is_fine(tmp_path: Path) -> None:
    # "不感兴趣" (deny) holds "感兴趣" (affirm), whose negated class is deny by default
    assert findings(tmp_path, BASE)[1] == []
    no_rule = changed(('always = ["dnc"]', 'always = ["dnc"]\nnegation = {}'))
    _path, found = findings(tmp_path, no_rule)
    assert [(f.key, f.message.split(":")[0]) for f in found] == [
        (
            "intents.deny.keywords",
            "'不感兴趣' (deny) contains '感兴趣' (affirm) and no negation rule separates them",
        )
    ]
    assert found[0].message.endswith(
        "give '感兴趣' negated = 'deny', or give 'affirm' the exclusion '不感兴趣'"
    )
    other_class = changed(('keywords = ["可以", "感兴趣"]',
                           'keywords = ["可以", {word = "感兴趣", negated = "busy"}]'))  # fmt: skip
    assert [f.key for f in findings(tmp_path, other_class)[1]] == ["intents.deny.keywords"]


def test_an_exclusion_of_the_inner_class_separates_them(tmp_path: Path) -> None:
    text = changed(
        ('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "可以晚点打"]'),
        (
            'keywords = ["可以", "感兴趣"]',
            'keywords = ["可以", "感兴趣"]\nexclusions = ["可以晚点"]',
        ),
    )
    assert findings(tmp_path, text)[1] == []


def test_classes_never_heard_together_do_not_clash(tmp_path: Path) -> None:
    # busy is heard only at hold, affirm only at greeting
    text = changed(
        ('keywords = ["在开车", "开会"]', 'keywords = ["在开车", "可以晚点打"]'),
        ('on = { affirm = "bye_yes", deny = "bye_no", busy = "hold", default = "repeat" }',
         'on = { affirm = "bye_yes", deny = "bye_no", default = "hold" }'),
        ('on = { affirm = "bye_yes", default = "bye_no" }',
         'on = { busy = "bye_no", default = "bye_yes" }'),
    )  # fmt: skip
    assert findings(tmp_path, text)[1] == []


# ───────────────────────── knowledge base ─────────────────────────


def test_a_kb_entry_every_node_routes_itself_is_never_answered(tmp_path: Path) -> None:
    text = changed(
        ('busy = "hold", default', 'busy = "hold", "kb.price" = "bye_no", default'),
        ('affirm = "bye_yes", default', 'affirm = "bye_yes", "kb.price" = "listen", default'),
    )  # fmt: skip
    path, found = findings(tmp_path, text)
    assert [str(f) for f in found] == [
        f"{path}:{line_of(text, '[kb.price]')}: warning: kb.price: never answered: every node "
        "that hears 'kb.price' routes it itself (or no node hears it), so this entry's answer "
        "is never said"
    ]
    one_node_leaves_it = changed(
        ('busy = "hold", default', 'busy = "hold", "kb.price" = "bye_no", default')
    )
    assert findings(tmp_path, one_node_leaves_it)[1] == []


def test_a_finding_in_an_included_class_names_that_file_and_line(tmp_path: Path) -> None:
    common = tmp_path / "common"
    common.mkdir()
    (common / "zh-intents.toml").write_text(
        '# shared classes\n\n[intents.busy]\ndescription = "忙"\nkeywords = ["可以晚点打"]\n',
        encoding="utf-8",
    )
    text = changed(
        ('always = ["dnc"]', 'always = ["dnc"]\ninclude = ["common/zh-intents.toml"]'),
        ('[intents.busy]\nkeywords = ["在开车", "开会"]\n', ""),
    )
    _path, found = findings(tmp_path, text)
    assert [(f.file, f.line, f.key) for f in found] == [
        (common / "zh-intents.toml", 5, "intents.busy.keywords")
    ]


def test_a_node_extra_hidden_by_a_class_that_comes_first(tmp_path: Path) -> None:
    text = changed(('on = { affirm = "bye_yes", default = "bye_no" }',
                    'keywords = { busy = ["可以晚点"] }\n'
                    'on = { affirm = "bye_yes", busy = "bye_no", default = "bye_no"}'))  # fmt: skip
    path, found = findings(tmp_path, text)
    assert [(f.file, f.line, f.key) for f in found] == [
        (path, line_of(text, "keywords = { busy"), "nodes.hold.keywords.busy")
    ]
    assert found[0].message.startswith("'可以晚点' (busy) contains '可以' (affirm)")


# ───────────────────────── patterns and classes ─────────────────────────


def test_a_pattern_that_matches_an_empty_reply(tmp_path: Path) -> None:
    text = changed(('"开会"]', '"开会"]\npatterns = ["在(开车|开会)", "(忙|)"]'))
    path, found = findings(tmp_path, text)
    assert [str(f) for f in found] == [
        f"{path}:{line_of(text, 'patterns = [')}: warning: intents.busy.patterns[1]: pattern "
        "'(忙|)' matches an empty reply, so it fires on every reply: everything is 'busy'"
    ]


def test_a_class_of_the_script_no_node_hears(tmp_path: Path) -> None:
    text = changed(("[intents.dnc]", '[intents.later]\nkeywords = ["晚点"]\n\n[intents.dnc]'))
    path, found = findings(tmp_path, text)
    assert [str(f) for f in found] == [
        f"{path}:{line_of(text, '[intents.later]')}: warning: intents.later: heard nowhere: "
        "no node routes on it, and it is not in script.always"
    ]
