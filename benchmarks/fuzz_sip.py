"""Fuzz the SIP plugin's parsers: mutated real messages in, only the declared error out.

Each target takes bytes made by mutating a real input (the 49 RFC 4475
torture messages, SDP bodies as carriers and softphones write them,
name-addr values, digest challenges, dial targets) and runs a parser on it.
The only exception a target may let out is the one its parser declares
(``SipParseError``, ``SdpError``, ``DigestError``, ``BadTarget``); anything
else is a finding, printed with the input that caused it.

Run by ``make fuzz`` (the long run whose figures are in benchmarks/README.md)
and, a few hundred inputs per target, by tests/test_sip_fuzz.py through
hypothesis, which loads this file for its seeds, mutator and targets.

    python benchmarks/fuzz_sip.py [--inputs N] [--seed S] [--target NAME]

What it is not: coverage-guided (atheris is not used: Python 3.11 wheels are
not to be relied on here); the mutations aim at what broke before (non-ASCII
digits, separators, truncation, duplicated lines).

Error handling: an undeclared exception is counted and its first
occurrence per (exception type, message's first words) printed with a repr of
the input; the exit status is 1 when there was any, 0 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from waihu.api import BadTarget
from waihu_sip.address import NameAddress, SipUri, split_host_port
from waihu_sip.digest import DigestChallenge, authorization_value, parse_auth_params
from waihu_sip.errors import DigestError, SdpError, SipParseError
from waihu_sip.message import parse_message
from waihu_sip.sdp import choose_codec, parse_sdp
from waihu_sip.target import check_target

REPO = Path(__file__).resolve().parent.parent
TORTURE = REPO / "tests" / "data" / "rfc4475"
DEFAULT_INPUTS = 40_000  # per target: five targets make 200,000 inputs
MAX_OPERATIONS = 4  # mutations stacked on one input
MAX_SPAN = 16  # bytes one mutation deletes, repeats or overwrites at most
SHOWN_PER_FINDING = 1

# What broke parsers before, and what separates fields: spliced in at random places.
INTERESTING: tuple[bytes, ...] = (
    "²".encode(),  # str.isdigit() says yes, int() says no
    "١٢".encode(),  # Arabic-Indic 12: int() reads it as 12
    "５".encode(),  # full-width 5
    b"\x00",
    b"\xff\xfe",  # not UTF-8
    b"\r\n",
    b"\r\n ",  # a fold
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b"?",
    b"=",
    b"/",
    b"%",
    b"[",
    b"]",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"SIP/2.0",
    b"sip:",
    b"tel:",
    b"Content-Length: 9\r\n",
    b"Call-ID: x\r\n",
)

Runner = Callable[[bytes], None]


@attrs.frozen
class Target:
    """A parser under fuzz: the inputs it starts from and the one error it may raise."""

    name: str
    seeds: tuple[bytes, ...]
    run: Runner
    declared: type[Exception]


# ───────────────────────── seeds ─────────────────────────

INVITE_SEED = (
    b"INVITE sip:13800138000@pbx.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "\xe5\xbc\xa0\xe4\xb8\x89" <sip:8001@pbx.example.com>;tag=1928301774\r\n'
    b"To: <tel:+8613800138000>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:8001@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"Expires: 120\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>, <sip:[2001:db8::1]:5070;lr>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n"
    b"\r\n"
    b"v=0\r\no=- 20518 0 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
RESPONSE_SEED = (
    b"SIP/2.0 407 Proxy Authentication Required\r\n"
    b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=203.0.113.9;rport=40000\r\n"
    b"f: <sip:8001@pbx.example.com>;tag=1928301774\r\n"
    b"t: <sip:13800138000@pbx.example.com>;tag=a6c85cf\r\n"
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Proxy-Authenticate: Digest realm="pbx", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", '
    b'algorithm=MD5, qop="auth"\r\n'
    b"l: 0\r\n\r\n"
)
SDP_SEEDS = (
    b"v=0\r\no=FreeSWITCH 1732950000 1732950001 IN IP4 203.0.113.5\r\ns=FreeSWITCH\r\n"
    b"c=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 27384 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\na=sendrecv\r\n",
    b"v=0\r\no=- 3 2 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n"
    b"a=recvonly\r\nm=audio 4000/2 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000/1\r\n"
    b"m=video 4002 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\n",
    b"v=0\r\no=root 1 1 IN IP4 192.0.2.1\r\ns=call\r\nc=IN IP4 192.0.2.1/127\r\nt=0 0\r\n"
    b"m=audio 0 RTP/AVP 18\r\n",
)
ADDRESS_SEEDS = (
    b'"Robot, Inc." <sip:waihu@example.com>;tag=a1',
    b"<sip:alice:secret@[2001:db8::1]:5061;transport=tls;lr>;expires=60;q=0.5",
    b"sip:+8613800138000@gw.example.net;user=phone;tag=9",
    b"<tel:+8613800138000;phone-context=+86>",
    b"Bob <sips:bob@host.example.com:5070?Subject=hi>",
    b"pbx.example.com:5060",
    b"[::1]:5060",
)
DIGEST_SEEDS = (
    b'Digest realm="pbx.example.com", nonce="abc123", algorithm=SHA-256, qop="auth,auth-int", '
    b'opaque="xyz", stale=TRUE',
    b'Digest realm="\\"quoted\\" realm", nonce="n", algorithm=MD5-sess',
    b'Digest nonce="n", realm="r"',
)
TARGET_SEEDS = (
    b"13800138000",
    b"+86 138-0013 8000",
    b"*99#",
    b"tel:+8613800138000;phone-context=+86",
    b"sip:1001@pbx.example.com:5060;transport=udp",
    b"1001@[2001:db8::1]",
)


def torture_messages() -> tuple[bytes, ...]:
    """The RFC 4475 messages, as vendored under tests/data/rfc4475."""
    return tuple(p.read_bytes() for p in sorted(TORTURE.glob("*.dat")))


# ───────────────────────── what each target runs ─────────────────────────


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")  # as header values arrive (message.py)


def run_message(data: bytes) -> None:
    """Parse; a message that parses must answer every accessor and parse again when written."""
    message = parse_message(data)
    _ = (message.call_id, message.cseq, message.from_, message.to, message.vias)
    _ = (message.top_via.branch, message.max_forwards)
    try:
        _ = message.expires  # not checked at parse time: may still be malformed
    except SipParseError:
        pass
    parse_message(message.to_bytes())


def run_sdp(data: bytes) -> None:
    """Parse an SDP body and pick a codec from it."""
    description = parse_sdp(data)
    choose_codec(description, ["PCMU", "PCMA"])
    _ = description.telephone_event_pt


def run_address(data: bytes) -> None:
    """Read the text as a name-addr (any scheme and SIP only), a SIP URI and a host:port."""
    text = _text(data)
    parsed = NameAddress.parse(text, any_scheme=True)
    if isinstance(parsed.uri, SipUri):
        NameAddress.parse(str(parsed))  # what we write back must read again
    for parse in (NameAddress.parse, SipUri.parse, split_host_port):
        try:
            parse(text)
        except SipParseError:
            pass


def run_digest(data: bytes) -> None:
    """Parse a challenge and its parameter list (read-only here: digest.py is sip-txn's)."""
    text = _text(data)
    parse_auth_params(text.partition(" ")[2])
    DigestChallenge.parse(text)


def run_digest_answer(data: bytes) -> None:
    """Answer a challenge that parses (digest.py's own fix of non-UTF-8 realms is sip-txn's)."""
    challenge = DigestChallenge.parse(_text(data))
    if challenge.supported:
        authorization_value(
            challenge, method="INVITE", uri="sip:1@example.com", username="u", password="p"
        )


def run_target(data: bytes) -> None:
    """Check a dial target; one that passes must pass again unchanged."""
    checked = check_target(_text(data))
    if check_target(checked) != checked:
        raise AssertionError(f"check_target is not idempotent on {checked!r}")


def targets() -> dict[str, Target]:
    """Every fuzz target by name."""
    return {
        t.name: t
        for t in (
            Target(
                "message",
                (*torture_messages(), INVITE_SEED, RESPONSE_SEED),
                run_message,
                SipParseError,
            ),
            Target("sdp", (*SDP_SEEDS, INVITE_SEED.split(b"\r\n\r\n", 1)[1]), run_sdp, SdpError),
            Target("address", ADDRESS_SEEDS, run_address, SipParseError),
            Target("digest", DIGEST_SEEDS, run_digest, DigestError),
            Target("digest-answer", DIGEST_SEEDS, run_digest_answer, DigestError),
            Target("target", TARGET_SEEDS, run_target, BadTarget),
        )
    }


# ───────────────────────── mutation ─────────────────────────


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """``seed`` with 1..MAX_OPERATIONS random edits aimed at what parsers get wrong."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, MAX_OPERATIONS)):
        operation = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        span = rng.randint(1, MAX_SPAN)
        if operation == 0:  # splice in a token
            data[at:at] = rng.choice(INTERESTING)
        elif operation == 1:  # overwrite with a token
            data[at : at + span] = rng.choice(INTERESTING)
        elif operation == 2:  # delete a run
            del data[at : at + span]
        elif operation == 3:  # repeat a run
            data[at:at] = data[at : at + span]
        elif operation == 4:  # a digit becomes a digit only Unicode calls one
            digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
            if digits:
                i = rng.choice(digits)
                data[i : i + 1] = rng.choice(("²", "١", "５", "𝟗")).encode()
        elif operation == 5:  # repeat a whole line (a second Call-ID, CSeq, …)
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 1:
                i = rng.randrange(len(lines))
                lines.insert(i, lines[i])
                data = bytearray(b"\r\n".join(lines))
        else:  # flip a byte
            if data:
                i = rng.randrange(len(data))
                data[i] = rng.randrange(256)
    return bytes(data)


def check_one(target: Target, data: bytes) -> BaseException | None:
    """Run ``target`` on ``data``; the undeclared exception it raised, or None."""
    try:
        target.run(data)
    except target.declared:
        return None
    except Exception as exc:  # the finding this whole file exists to catch
        return exc
    return None


# ───────────────────────── the long run ─────────────────────────


@attrs.define
class FuzzResult:
    """What one target's run came to."""

    target: str
    inputs: int = 0
    undeclared: int = 0
    seconds: float = 0.0
    # (exception type, first words of its text) → (count, first input, full text)
    findings: dict[tuple[str, str], tuple[int, bytes, str]] = attrs.field(factory=dict)


def fuzz(target: Target, inputs: int, rng: random.Random) -> FuzzResult:
    """Run ``inputs`` mutated inputs through ``target``; figures and findings."""
    result = FuzzResult(target.name, inputs)
    start = time.perf_counter()
    for _ in range(inputs):
        data = mutate(rng, rng.choice(target.seeds))
        exc = check_one(target, data)
        if exc is None:
            continue
        result.undeclared += 1
        key = (type(exc).__name__, " ".join(str(exc).split()[:4]))
        count, first, text = result.findings.get(key, (0, data, str(exc)))
        result.findings[key] = (count + 1, first, text)
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    """Fuzz every target (or one) and print a table of figures, then each finding."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=DEFAULT_INPUTS, help="inputs per target")
    parser.add_argument("--seed", type=int, default=4475, help="random seed (reproducible runs)")
    parser.add_argument("--target", choices=sorted(targets()), help="only this target")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    chosen = [targets()[args.target]] if args.target else list(targets().values())
    results = [fuzz(t, args.inputs, rng) for t in chosen]
    print("| target | inputs | undeclared exceptions | inputs/s |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.target} | {r.inputs:,} | {r.undeclared:,} | {r.inputs / r.seconds:,.0f} |")
    for r in results:
        for (kind, _words), (count, data, text) in r.findings.items():
            print(f"\n{r.target}: {count} × {kind}: {text[:200]}\n  first input: {data[:300]!r}")
    total = sum(r.undeclared for r in results)
    print(f"\n{sum(r.inputs for r in results):,} inputs, {total} undeclared exceptions")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
