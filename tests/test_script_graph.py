"""``waihu.dialog.graph`` and ``waihuctl script graph``: the flow drawn with Graphviz.

The DOT text is checked for the nodes, their looks and the labelled edges a
reader needs; an SVG is laid out by the real ``dot`` when it is installed,
and without ``dot`` on PATH the command says to install Graphviz.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from waihu.control.client import main
from waihu.dialog.graph import GraphError, flow_graph, render
from waihu.dialog.script import Script, load_script

from conftest import SCRIPTS

SCRIPT = """\
[script]
name = "graph-demo"
language = "zh"
start = "greeting"
priority = ["kb", "affirm", "deny", "busy"]
always = ["dnc"]
turn_cap = 10
on_turn_cap = "bye_no"

[handlers.no_input]
limit = 3
counting = "total"
then = "bye_silence"

[handlers.no_match]
limit = 2
then = { say = [{ text = "听不清，再见。" }], hangup = true }

[handlers.dtmf]
"0" = { transfer = "sales" }

[handlers.on]
dnc = { dnc = true, hangup = true }

[intents.affirm]
keywords = ["可以"]

[intents.deny]
keywords = ["不用"]

[intents.busy]
keywords = ["在开车"]

[intents.dnc]
keywords = ["别再打"]

[nodes.greeting]
say = [{ text = "您好，想给您介绍一款很不错的新产品，您看可以吗？" }]
[nodes.greeting.on]
affirm = "book"
busy = { goto = "bye_no", tags = ["busy"] }
deny = "bye_no"
short = "repeat"
long = "bye_no"

[nodes.book]
say = [{ text = "约您明天？" }]
on = { affirm = "bye_yes", deny = "bye_no", default = "listen" }

[nodes.bye_yes]
say = [{ text = "好的。" }]
end = true
grade = "A"
tags = ["booked"]
transfer = "sales"

[nodes.bye_no]
say = [{ text = "打扰了。" }]
end = true
grade = "C"

[nodes.bye_silence]
say = [{ text = "再见。" }]
end = true
dnc = true

[kb.price]
keywords = ["多少钱"]
say = [{ text = "每月十元。" }]
then = "repeat"
limit = 2
on_limit = "bye_no"

[kb.address]
keywords = ["在哪"]
say = [{ text = "在北京。" }]
then = "book"
"""


@pytest.fixture
def script(tmp_path: Path) -> Script:
    path = tmp_path / "graph-demo.toml"
    path.write_text(SCRIPT, encoding="utf-8")
    return load_script(path)


def dot(script: Script) -> str:
    return render(flow_graph(script), "dot").decode("utf-8")


def dot_with(script: Script, old: str, new: str) -> str:
    """The DOT text of ``script`` with ``old`` replaced by ``new`` in its file."""
    changed = script.path.with_name("changed.toml")
    text = script.path.read_text(encoding="utf-8")
    assert old in text
    changed.write_text(text.replace(old, new, 1), encoding="utf-8")
    return dot(load_script(changed))


def test_nodes_carry_their_line_and_end_nodes_their_grade(script: Script) -> None:
    text = dot(script)
    assert 'greeting [label="greeting\n您好，想给您介绍一款很不错的新产品…" penwidth=2 shape=box ' \
        'style="rounded,bold"]' in text  # fmt: skip
    assert 'book [label="book\n约您明天？" penwidth=1 shape=box style=rounded]' in text
    assert 'bye_no [label="bye_no\n打扰了。\nC" peripheries=2 shape=box style=rounded]' in text
    assert 'bye_yes [label="bye_yes\n好的。\nA · booked\ntransfer sales" peripheries=2 ' \
        'shape=house style=rounded]' in text  # fmt: skip
    # no grade of its own: the script's default grade applies
    assert 'bye_silence [label="bye_silence\n再见。\n(default grade)\ndo not call" ' \
        'peripheries=2 shape=octagon style=rounded]' in text  # fmt: skip


def test_routes_are_edges_labelled_with_their_classes(script: Script) -> None:
    text = dot(script)
    assert "greeting -> book [label=affirm]" in text
    assert 'greeting -> bye_no [label="deny, long"]' in text  # one edge for one target
    assert 'greeting -> bye_no [label="busy / tags busy"]' in text  # an action table
    said_first = dot_with(
        script, 'default = "listen"', 'default = { say = [{ text = "嗯" }], resume = "listen" }'
    )
    assert 'book -> book [label="default (listen) / say"]' in said_first
    assert 'greeting -> greeting [label="short (repeat)"]' in text
    assert 'book -> book [label="default (listen)"]' in text
    assert "book -> bye_yes [label=affirm]" in text


def test_handlers_are_dashed_edges_from_any_node(script: Script) -> None:
    text = dot(script)
    assert '"(any node)" -> bye_silence [label="no input ×3 (total)" style=dashed]' in text
    assert '"(any node)" -> "→ hang up" [label="no match ×2 (total) / say" style=dashed]' in text
    assert '"(any node)" -> bye_no [label="turn cap 10" style=dashed]' in text
    assert '"(any node)" -> "→ transfer sales" [label="dtmf 0" style=dashed]' in text
    assert '"(any node)" -> "→ hang up" [label="dnc / dnc" style=dashed]' in text
    # the script-wide dnc route is drawn once, not from every node it was copied into
    assert text.count("dnc / dnc") == 1


def test_the_knowledge_base_is_a_cluster_with_each_then(script: Script) -> None:
    text = dot(script)
    cluster = text[text.index("subgraph cluster_kb") :]
    assert 'label="knowledge base"' in cluster
    assert '"kb.price" [label="kb.price\n每月十元。\nthen re-ask the node\nat most 2 a call" ' \
        'shape=note]' in cluster  # fmt: skip
    assert '"kb.address" [label="kb.address\n在北京。" shape=note]' in cluster
    assert '"kb.address" -> book [label=then]' in text
    assert '"kb.price" -> bye_no [label="ask 3" style=dashed]' in text


def test_a_v1_script_draws_too() -> None:
    text = dot(load_script(SCRIPTS / "demo-ko.toml"))
    assert "greeting -> bye_interested [label=affirm]" in text
    assert '"(any node)" -> bye_silence [label="no input ×2 (consecutive)" style=dashed]' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_an_svg_is_laid_out_by_dot(script: Script) -> None:
    svg = render(flow_graph(script), "svg").decode("utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "<title>greeting&#45;&gt;book</title>" in svg


def test_without_dot_the_error_says_to_install_graphviz(
    script: Script, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(GraphError, match="install graphviz"):
        render(flow_graph(script), "svg")
    assert render(flow_graph(script), "dot").startswith(b"// waihu script graph-demo")


# ───────────────────────── waihuctl script graph ─────────────────────────


def test_graph_to_standard_output_is_dot(
    script: Script, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["script", "graph", str(script.path), "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('// waihu script graph-demo\ndigraph "graph-demo" {')
    assert "greeting -> book [label=affirm]" in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_writes_the_file_in_the_format_of_its_suffix(
    script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "flow.svg"
    assert main(["script", "graph", str(script.path), "-o", str(svg)]) == 0
    assert capsys.readouterr().out == f"{svg}: svg, 5 nodes, 2 kb entries\n"
    assert "<svg" in svg.read_text(encoding="utf-8")
    png = tmp_path / "flow.png"
    assert main(["script", "graph", str(script.path), "-o", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    forced = tmp_path / "flow.txt"
    assert main(["script", "graph", str(script.path), "-o", str(forced), "--format", "dot"]) == 0
    assert forced.read_text(encoding="utf-8").startswith("// waihu script graph-demo")


def test_graph_without_dot_or_with_an_unknown_format_fails(
    script: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "flow.svg"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["script", "graph", str(script.path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("waihuctl: Graphviz's 'dot' program is not on PATH: install graphviz")
    assert not out.exists()
    assert main(["script", "graph", str(script.path), "-o", str(out), "--format", "pdf"]) == 1
    assert capsys.readouterr().err == "waihuctl: unknown format 'pdf' (one of svg, png, dot)\n"


def test_graph_of_a_broken_script_prints_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(SCRIPT.replace('start = "greeting"', 'start = "hello"'), encoding="utf-8")
    assert main(["script", "graph", str(broken), "-o", "-"]) == 1
    assert capsys.readouterr().out == f"{broken}:4: script.start: no node named 'hello'\n"


def test_graph_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["script", "graph", str(SCRIPTS / "demo-ko.toml")])
    assert exited.value.code == 2
    assert "-o" in capsys.readouterr().err
