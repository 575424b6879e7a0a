"""Script loading and validation: the shipped scripts load; typos are named by file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from waihu.dialog.script import ScriptError, load_script

from conftest import SCRIPTS


def test_demo_script_loads() -> None:
    script = load_script(SCRIPTS / "demo-ko.toml")
    assert script.name == "demo-ko"
    greeting = script.nodes["greeting"]
    assert greeting.barge_in and not script.nodes["bye_declined"].barge_in
    # knowledge base first, then the script's priority order
    assert script.allowed(greeting) == ["kb.price", "kb.who", "affirm", "deny"]
    # the recogniser is told what to expect: intents routed on plus the kb questions
    assert "네" in greeting.phrases and "가격이 얼마 예요" in greeting.phrases
    assert all(p.is_file() for p in script.recordings())


@pytest.fixture
def script_copy(tmp_path: Path) -> Path:
    shutil.copytree(SCRIPTS / "prompts", tmp_path / "prompts")
    target = tmp_path / "s.toml"
    shutil.copy(SCRIPTS / "demo-ko.toml", target)
    return target


def broken(path: Path, old: str, new: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    return info.value.problems


def test_unknown_intent_named(script_copy: Path) -> None:
    found = broken(
        script_copy,
        'on = { affirm = "bye_interested", deny = "bye_declined", default = "ask_again" }',
        'on = { afirm = "bye_interested", deny = "bye_declined", default = "ask_again" }',
    )
    assert f"{script_copy}:29: nodes.greeting.on.afirm: unknown class 'afirm'" in found


def test_unknown_target_node(script_copy: Path) -> None:
    found = broken(script_copy, 'default = "bye_unclear"', 'default = "bye_unclaer"')
    assert f"{script_copy}:35: nodes.ask_again.on.default: no node named 'bye_unclaer'" in found
    # the node the typo orphaned is reported too
    assert any("nodes.bye_unclear: is unreachable" in p for p in found)


def test_missing_recording(script_copy: Path) -> None:
    found = broken(script_copy, "prompts/demo-ko/price.wav", "prompts/demo-ko/prize.wav")
    assert any("kb.price.say[0].recording: file not found" in p and "prize.wav" in p for p in found)


def test_node_with_no_way_out(script_copy: Path) -> None:
    found = broken(script_copy, 'end = true\ngrade = "B"', 'grade = "B"')
    assert (
        f"{script_copy}:53: nodes.bye_unclear: has no way out: give it 'on' routes or make it "
        "an end node" in found
    )


def test_loop_with_no_exit(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    path = tmp_path / "loop.toml"
    path.write_text(
        """
[script]
start = "a"
on_silence = "bye"
[intents.affirm]
keywords = ["yes"]
[nodes.a]
say = [{ text = "A?", recording = "a.wav" }]
on = { affirm = "b", default = "a" }
[nodes.b]
say = [{ text = "B?", recording = "a.wav" }]
on = { affirm = "a", default = "b" }
[nodes.bye]
say = [{ text = "bye", recording = "a.wav" }]
end = true
""",
        encoding="utf-8",
    )
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert any("nodes.a: loops with no exit" in p for p in info.value.problems)


def test_wrong_type_and_unknown_key(script_copy: Path) -> None:
    found = broken(script_copy, "silence_timeout = 5.0", 'silence_timeout = "5s"\nsilense = 1')
    assert any("script.silence_timeout: must be a number, not a string" in p for p in found)
    assert any("script: unknown key silense" in p for p in found)


def test_bad_grade(script_copy: Path) -> None:
    found = broken(script_copy, 'grade = "A"', 'grade = "Z"')
    assert any("nodes.bye_interested.grade: must be one of A, B, C, D, E, F" in p for p in found)


def test_placeholders_and_content_hash_identify_what_a_script_needs(tmp_path: Path) -> None:
    """A campaign checks contacts against the script's {fields}, and files which version spoke."""
    path = tmp_path / "s.toml"
    text = (
        '[script]\nstart = "a"\non_silence = "b"\n'
        '[intents.affirm]\nkeywords = ["네"]\n[intents.deny]\nkeywords = ["아니요"]\n'
        '[nodes.a]\nsay = [{ text = "{name}님, {company.x} 입니다", recording = "a.wav" }]\n'
        'on = { affirm = "b", default = "b" }\n'
        '[nodes.b]\nsay = [{ text = "{{literal}} 안녕히", recording = "b.wav" }]\nend = true\n'
        "dnc = true\n"
    )
    path.write_text(text, encoding="utf-8")
    script = load_script(path, check_recordings=False)
    assert script.placeholders == {"name", "company"}
    assert script.nodes["b"].dnc and not script.nodes["a"].dnc
    first = script.content_hash
    path.write_text(text.replace("안녕히", "안녕"), encoding="utf-8")
    assert len(first) == 64 and load_script(path, check_recordings=False).content_hash != first


def test_dnc_on_a_node_that_is_not_an_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[script]\nstart = "a"\non_silence = "b"\n'
        '[nodes.a]\nsay = [{ text = "x", recording = "a.wav" }]\n'
        'on = { default = "b" }\ndnc = true\n'
        '[nodes.b]\nsay = [{ text = "y", recording = "b.wav" }]\nend = true\n',
        encoding="utf-8",
    )
    with pytest.raises(ScriptError) as err:
        load_script(path, check_recordings=False)
    assert any("nodes.a.dnc: only an end node" in p for p in err.value.problems)
