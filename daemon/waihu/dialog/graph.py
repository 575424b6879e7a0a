"""A script drawn as a flow chart (``waihuctl script graph``), with Graphviz.

``flow_graph`` turns a loaded ``Script`` into a ``graphviz.Digraph``: every
node of the main flow as a box (the start node bold, end nodes doubled and
labelled with their grade and tags, a transfer or do-not-call end shaped
apart), one edge per route target labelled with the classes that take it
(``affirm, busy``; ``short``; ``long``; ``default``), action tables named on
their edge (``say``, ``tags``, ``dnc``); a route that hangs up or transfers
ends at a terminal of its own. The script-wide handlers — no input, no
match, the turn cap, DTMF keys, routes by class from ``[handlers.on]`` — are
dashed edges from one "any node" point,
and the knowledge base is a cluster of its entries, each with its ``then``
and its exceed action.

``render`` lays the graph out with Graphviz's ``dot`` program (``svg``,
``png``) or returns its DOT text.

What it is not: a validator (a script is drawn as loaded; ``lint`` judges
it) or a layout engine (``dot`` does that).

Error handling: ``render`` raises ``GraphError`` saying to install Graphviz
when ``dot`` is not on PATH, and naming the failure when ``dot`` fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from typing import Literal

import graphviz

from waihu.api import WaihuError
from waihu.dialog.script import Action, KbEntry, Node, Script

__all__ = ["FORMATS", "GraphError", "flow_graph", "render"]

Format = Literal["svg", "png", "dot"]
FORMATS: tuple[Format, ...] = ("svg", "png", "dot")
LINE_PREVIEW = 18  # characters of a node's first line shown under its name: enough to recognise
ANY_NODE = "(any node)"  # the point the script-wide handlers leave from
_TERMINAL = "\u2192 "  # terminals are named "→ hang up", "→ transfer sales": no node is
_RESUMES = {"repeat": "re-ask the node", "listen": "listen again"}  # a kb entry's resume, said
FONT = "Noto Sans CJK SC,WenQuanYi Micro Hei,sans-serif"  # a face that has Chinese glyphs


class GraphError(WaihuError):
    """The graph cannot be drawn; the message says why and what to do."""


def flow_graph(script: Script) -> graphviz.Digraph:
    """The script's main flow, handlers and knowledge base as a Graphviz digraph."""
    graph = graphviz.Digraph(name=script.name, comment=f"waihu script {script.name}")
    graph.attr(rankdir="LR", label=script.name, labelloc="t", fontname=FONT)
    graph.attr("node", fontname=FONT, fontsize="11")
    graph.attr("edge", fontname=FONT, fontsize="9")
    terminals: set[str] = set()
    for node in script.nodes.values():
        graph.node(node.name, **_node_look(node, start=node.name == script.start))
    shared = script.handlers.on
    for node in script.nodes.values():
        # script-wide routes are copied into each node by the loader; drawn once, below
        own = {k: a for k, a in node.on.items() if shared.get(k) is not a}
        for target, label in _grouped(own):
            _edge(graph, terminals, node.name, target, label)
    _handlers(graph, terminals, script)
    if script.kb:
        with graph.subgraph(name="cluster_kb") as kb:
            kb.attr(label="knowledge base", style="rounded,dashed", fontname=FONT)
            for entry in script.kb.values():
                kb.node(entry.intent, **_kb_look(entry))
        for entry in script.kb.values():
            if entry.then.resume is None:  # a resume is written in the entry's box
                _edge(graph, terminals, entry.intent, entry.then, "then")
            if entry.on_limit is not None:
                _edge(graph, terminals, entry.intent, entry.on_limit,
                      f"ask {(entry.limit or 0) + 1}", dashed=True)  # fmt: skip
    return graph


def render(graph: graphviz.Digraph, fmt: Format) -> bytes:
    """``graph`` laid out as ``fmt`` (``svg``, ``png``), or its DOT text for ``dot``.

    Raises GraphError when Graphviz's ``dot`` is missing or fails.
    """
    if fmt == "dot":
        return graph.source.encode("utf-8")
    try:
        return graph.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
        raise GraphError(
            "Graphviz's 'dot' program is not on PATH: install graphviz "
            "(apt-get install graphviz), or write DOT text with --format dot"
        ) from None
    except (graphviz.CalledProcessError, subprocess.SubprocessError) as exc:
        raise GraphError(f"dot failed: {exc}") from None


# ───────────────────────── looks ─────────────────────────


def _node_look(node: Node, *, start: bool) -> dict[str, str]:
    lines = [node.name]
    if node.say:
        lines.append(_preview(node.say[0].text))
    if not node.end:
        return {
            "label": "\n".join(lines),
            "shape": "box",
            "style": "rounded,bold" if start else "rounded",
            "penwidth": "2" if start else "1",
        }
    outcome = [node.grade or "(default grade)", *node.tags]
    lines.append(" · ".join(outcome))
    look = {"shape": "box", "peripheries": "2", "style": "rounded"}
    if node.transfer:
        lines.append(f"transfer {node.transfer}")
        look["shape"] = "house"
    if node.dnc:
        lines.append("do not call")
        look["shape"] = "octagon"
    look["label"] = "\n".join(lines)
    return look


def _kb_look(entry: KbEntry) -> dict[str, str]:
    lines = [entry.intent]
    if entry.say:
        lines.append(_preview(entry.say[0].text))
    if entry.then.resume is not None:
        lines.append(f"then {_RESUMES[entry.then.resume]}")
    if entry.limit is not None:
        lines.append(f"at most {entry.limit} a call")
    return {"label": "\n".join(lines), "shape": "note"}


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LINE_PREVIEW else text[: LINE_PREVIEW - 1] + "…"


# ───────────────────────── edges ─────────────────────────


def _grouped(routes: Mapping[str, Action]) -> list[tuple[Action, str]]:
    """Routes with the same action drawn as one edge, its label listing their keys in
    the order written."""
    return _merge(routes.items(), ", ")


def _edge(
    graph: graphviz.Digraph,
    terminals: set[str],
    source: str,
    action: Action,
    label: str,
    *,
    dashed: bool = False,
) -> None:
    """One edge for ``action`` taken from ``source``: to the node it goes to, back to
    ``source`` for a resume, or to a hang-up or transfer terminal."""
    if action.goto is not None:
        target = action.goto
    elif action.resume is not None:
        target = source
        label = f"{label} ({action.resume})"
    else:
        target = _terminal(graph, terminals, action)
    extras = _extras(action)
    attrs = {"label": f"{label} / {extras}" if extras else label}
    if dashed:
        attrs["style"] = "dashed"
    graph.edge(source, target, **attrs)


def _extras(action: Action) -> str:
    """What an action table does on the way, for its edge's label."""
    parts = []
    if action.say:
        parts.append("say")
    if action.set:
        parts.append("set " + ", ".join(action.set))
    if action.tags:
        parts.append("tags " + ", ".join(action.tags))
    if action.dnc:
        parts.append("dnc")
    return "; ".join(parts)


def _terminal(graph: graphviz.Digraph, terminals: set[str], action: Action) -> str:
    name = _TERMINAL + (f"transfer {action.transfer}" if action.transfer else "hang up")
    if name not in terminals:
        terminals.add(name)
        graph.node(name, shape="plaintext")
    return name


def _handlers(graph: graphviz.Digraph, terminals: set[str], script: Script) -> None:
    """The script-wide handlers as dashed edges from the "any node" point."""
    handlers = script.handlers
    edges: list[tuple[str, Action]] = []
    no_input = handlers.no_input
    edges.append((f"no input ×{no_input.limit} ({no_input.counting})", no_input.then))
    if handlers.no_match is not None:
        no_match = handlers.no_match
        edges.append((f"no match ×{no_match.limit} ({no_match.counting})", no_match.then))
    if script.on_turn_cap is not None and script.turn_cap is not None:
        edges.append((f"turn cap {script.turn_cap}", script.on_turn_cap))
    if script.on_transfer_failed is not None:
        edges.append(("transfer failed", script.on_transfer_failed))
    edges.extend((f"dtmf {key}", action) for key, action in handlers.dtmf.items())
    edges.extend((cls, action) for cls, action in handlers.on.items())
    graph.node(ANY_NODE, shape="circle", style="dashed", label="any\nnode", width="0.6")
    for action, label in _merge(edges, "\n"):
        _edge(graph, terminals, ANY_NODE, action, label, dashed=True)


def _merge(edges: Iterable[tuple[str, Action]], joiner: str) -> list[tuple[Action, str]]:
    """Labels of edges taking the same action joined into one edge, in first-seen order.

    Actions are compared, not hashed: an action table holds a mapping (``set``).
    """
    merged: list[tuple[Action, list[str]]] = []
    for label, action in edges:
        same = next((labels for seen, labels in merged if seen == action), None)
        if same is None:
            merged.append((action, [label]))
        else:
            same.append(label)
    return [(action, joiner.join(labels)) for action, labels in merged]
