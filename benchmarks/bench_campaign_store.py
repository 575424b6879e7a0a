"""Campaign-store figures on a big SQLite file: stats, claims and an export at a million attempts.

Run: ``.venv/bin/python benchmarks/bench_campaign_store.py [--attempts 1000000] [--keep FILE]``.

A file is built with bulk inserts straight into the real schema
(``waihu_sqlite.schema``): one campaign of ``--attempts`` attempts over
``--attempts / 2.5`` contacts, every attempt with its call record, and each
answered call (a quarter) with a transcript of 3–8 turns across 6 script
nodes; a second, small campaign shares the file. Then, through the real
``SqliteStorage`` provider (its worker thread, its transactions), it times:

- ``campaign_stats`` of the big campaign (contacts, outcomes, grades, the
  node funnel of answered calls), first and warm;
- claiming 100 contacts: one ``claim_contacts(limit=100)``, and 100 claims of
  one as the scheduler makes them;
- an export: ``campaign_attempts`` pages of 1000 through every attempt.

What it is not: a test; nothing here asserts. The machine is shared: run it
twice before believing a figure. Building the file takes a minute or two.
"""

from __future__ import annotations

import argparse
import logging
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils
import trio

from waihu.api import CallRecord, ProviderContext, Turn
from waihu_sqlite.rows import call_row, turn_rows
from waihu_sqlite.schema import ensure_schema
from waihu_sqlite.storage import SqliteStorage

CAMPAIGN = "big"
OTHER = "small"
ATTEMPTS_PER_CONTACT = 2.5  # the average: a contact is dialled until answered or out of tries
ANSWERED_SHARE = 0.25  # of attempts: a conversation took place
PENDING_SHARE = 0.1  # of contacts still due (what the claims take)
NODES = ("greeting", "intro", "price", "offer", "objection", "bye")
OUTCOME_WEIGHTS = {
    "no_answer": 0.40,
    "busy": 0.15,
    "failed": 0.10,
    "rejected": 0.05,
    "invalid_number": 0.05,
}
GRADES = ("A", "B", "C", "D")
EXPORT_PAGE = 1000  # campaign_attempts' default page
BUILD_CHUNK = 10_000  # call records per executemany while building
START = 1_700_000_000.0
SEED = 20240601


def build(path: Path, attempts: int) -> None:
    """Write the campaign, contacts, attempts, calls and turns into a fresh file."""
    rng = random.Random(SEED)
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    conn.execute("PRAGMA synchronous = OFF")  # a scratch file: durability is not measured
    ensure_schema(db)
    contacts = round(attempts / ATTEMPTS_PER_CONTACT)
    with db.atomic():
        for campaign_id in (CAMPAIGN, OTHER):
            conn.execute(
                "INSERT INTO campaigns (id, name, state, settings, created_at)"
                " VALUES (?, ?, 'running', '{}', ?)",
                [campaign_id, campaign_id, START],
            )
        conn.executemany(
            "INSERT INTO contacts (id, campaign_id, number, variables, state, attempts,"
            " next_at) VALUES (?, ?, ?, '{}', ?, 0, ?)",
            (
                (
                    n,
                    CAMPAIGN,
                    f"+8613{n:09d}",
                    "pending" if rng.random() < PENDING_SHARE else "done",
                    START + rng.random() * 86400,
                )
                for n in range(1, contacts + 1)
            ),
        )
        seqs: dict[int, int] = {}
        rows = list(_attempts(rng, attempts, contacts, seqs))
        conn.executemany(
            "INSERT INTO attempts (id, campaign_id, contact_id, number, call_id, seq, node,"
            " started_at, script_hash, ended_at, outcome, sip_status, grade, tags, note)"
            " VALUES (?, ?, ?, ?, ?, ?, 'node-a', ?, 'h', ?, ?, ?, ?, '[]', ?)",
            rows,
        )
        conn.executemany(
            "UPDATE contacts SET attempts = ? WHERE id = ?",
            ((count, contact) for contact, count in seqs.items()),
        )
        _insert_calls(conn, rng, rows)
        # the small campaign: a few answered calls that the big one must not count
        conn.execute(
            "INSERT INTO contacts (campaign_id, number, variables, state, attempts, next_at)"
            " VALUES (?, '+821012345678', '{}', 'done', 1, 0)",
            [OTHER],
        )
    conn.close()


def _attempts(
    rng: random.Random, attempts: int, contacts: int, seqs: dict[int, int]
) -> Iterator[tuple]:
    """Attempt rows; ``seqs`` is filled with each contact's attempt count."""
    outcomes = list(OUTCOME_WEIGHTS)
    weights = list(OUTCOME_WEIGHTS.values())
    for n in range(1, attempts + 1):
        contact = rng.randint(1, contacts)
        seq = seqs[contact] = seqs.get(contact, 0) + 1
        started = START + n * 0.5
        if rng.random() < ANSWERED_SHARE:
            outcome, sip, grade = "answered", 200, rng.choice(GRADES)
        else:
            outcome, sip, grade = rng.choices(outcomes, weights)[0], 486, None
        note = "reconciled: interrupted" if rng.random() < 0.001 else None
        yield (
            n, CAMPAIGN, contact, f"+8613{contact:09d}", f"call-{n}", seq,
            started, started + 30, outcome, sip, grade, note,
        )  # fmt: skip


def _insert_calls(conn: sqlite3.Connection, rng: random.Random, attempts: list[tuple]) -> None:
    """Each attempt's call record, written as ``save_call`` writes it (``rows``)."""
    calls: list[dict] = []
    turns: list[dict] = []
    for _, campaign_id, _, number, call_id, _, started, ended, outcome, sip, grade, _ in attempts:
        answered = outcome == "answered"
        record = CallRecord(
            id=call_id,
            number=number,
            script="demo",
            trunk="office",
            status="ended" if answered else "failed",
            created_at=started,
            answered_at=started + 5 if answered else None,
            ended_at=ended,
            sip_status=sip,
            hangup_by=rng.choice(("robot", "callee")) if answered else None,
            grade=grade,
            turns=_transcript(rng) if answered else [],
            campaign_id=campaign_id,
            outcome=outcome,
        )
        calls.append(call_row(record))
        turns.extend(turn_rows(record))
        if len(calls) >= BUILD_CHUNK:
            _flush(conn, calls, turns)
    _flush(conn, calls, turns)


def _flush(conn: sqlite3.Connection, calls: list[dict], turns: list[dict]) -> None:
    for table, rows in (("calls", calls), ("turns", turns)):
        if rows:
            columns = list(rows[0])
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join(':' + c for c in columns)})",
                rows,
            )
            rows.clear()


def _transcript(rng: random.Random) -> list[Turn]:
    """3–8 turns, robot and callee in turn, two at each node down the script."""
    return [
        Turn(
            "robot" if seq % 2 == 0 else "callee",
            "text",
            NODES[min(seq // 2, len(NODES) - 1)],
        )
        for seq in range(rng.randint(3, 8))
    ]


async def measure(path: Path) -> None:
    context = ProviderContext(
        name="storage",
        state_dir=path.parent,
        log=logging.getLogger("bench"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    storage = SqliteStorage(SqliteStorage.Config(path=path.name), context)
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)

        for label in ("first", "warm"):
            began = time.perf_counter()
            stats = await storage.campaign_stats(CAMPAIGN)
            print(f"campaign_stats ({label}): {time.perf_counter() - began:.3f} s")
        print(
            f"  {stats.attempts} attempts, {stats.reconciled} reconciled, contacts {stats.contacts}"
        )
        print(f"  outcomes {dict(sorted(stats.outcomes.items()))}")
        print(f"  reached {stats.reached}")
        print(f"  last node {stats.last_node}; hangups {stats.hangups}")

        now = START + 86400
        began = time.perf_counter()
        claimed = await storage.claim_contacts(
            CAMPAIGN, now=now, limit=100, owner="node-a", lease_until=now + 60
        )
        print(f"claim_contacts(limit=100): {len(claimed)} in {time.perf_counter() - began:.4f} s")
        began = time.perf_counter()
        for _ in range(100):
            await storage.claim_contacts(
                CAMPAIGN, now=now, limit=1, owner="node-b", lease_until=now + 60
            )
        each = (time.perf_counter() - began) / 100
        print(f"claim_contacts(limit=1) x100: {each * 1000:.2f} ms each (one commit each)")

        pages: list[float] = []
        rows = after = 0
        while True:
            began = time.perf_counter()
            page = await storage.campaign_attempts(CAMPAIGN, after_id=after, limit=EXPORT_PAGE)
            pages.append(time.perf_counter() - began)
            if not page:
                break
            rows += len(page)
            after = page[-1][0].id
        quartiles = statistics.quantiles(pages, n=4)
        print(
            f"export: {rows} attempts in {len(pages) - 1} pages of {EXPORT_PAGE}:"
            f" {sum(pages):.1f} s; a page {quartiles[1] * 1000:.1f} ms"
            f" (quartiles {quartiles[0] * 1000:.1f}–{quartiles[2] * 1000:.1f}, max"
            f" {max(pages) * 1000:.1f})"
        )
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build into (or reuse) this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or Path(scratch) / "bench.db"
        if not path.exists():
            began = time.perf_counter()
            build(path, args.attempts)
            size = path.stat().st_size / 1e6
            print(f"built {path} in {time.perf_counter() - began:.1f} s ({size:.0f} MB)")
        trio.run(measure, path)


if __name__ == "__main__":
    main()
