"""The SQLite campaign store against real database files in tmp_path.

Contacts and attempts are made through the store's own methods (claim, begin,
finish), as the scheduler makes them; where a test needs a state the methods
cannot produce (a hand edit, a crash), it writes the file with sqlite3.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sqlite_storage import TIMEOUT, make_storage, running

from waihu.api import (
    Attempt,
    AuditEntry,
    CallRecord,
    CampaignRow,
    CampaignStats,
    CampaignStore,
    Contact,
    OutboxItem,
    ProviderError,
    Storage,
    Turn,
)
from waihu_sqlite.campaigns import StaleChange
from waihu_sqlite.storage import SqliteStorage

NODE = "node-a"
OTHER_NODE = "node-b"
LEASE = 60.0  # seconds a claim holds its contacts in these tests
T0 = 1_700_000_000.0


@pytest.fixture
def storage(tmp_path: Path) -> SqliteStorage:
    return make_storage(tmp_path)


def number(n: int) -> str:
    return f"+86138{n:08d}"


async def new_campaign(
    storage: SqliteStorage, campaign_id: str = "c1", *, contacts: int = 0, next_at: float = 0.0
) -> list[Contact]:
    """A campaign with ``contacts`` pending contacts, due at ``next_at`` + their index."""
    await storage.create_campaign(
        CampaignRow(id=campaign_id, name=f"campaign {campaign_id}", created_at=T0)
    )
    await storage.add_contacts(
        [
            Contact(
                campaign_id=campaign_id,
                number=number(n),
                variables={"name": f"客户{n}"},
                source_line=n + 2,
                next_at=next_at + n,
            )
            for n in range(contacts)
        ]
    )
    return await storage.campaign_contacts(campaign_id, limit=contacts + 1)


async def claim(
    storage: SqliteStorage,
    campaign_id: str = "c1",
    *,
    now: float = T0,
    limit: int = 100,
    owner: str = NODE,
) -> list[Contact]:
    return await storage.claim_contacts(
        campaign_id, now=now, limit=limit, owner=owner, lease_until=now + LEASE
    )


_calls = itertools.count(1)


async def begin(
    storage: SqliteStorage, contact: Contact, *, node: str = NODE, at: float = T0
) -> Attempt:
    return await storage.begin_attempt(
        Attempt(
            campaign_id=contact.campaign_id,
            contact_id=contact.id,
            number=contact.number,
            call_id=f"call-{next(_calls)}",
            seq=contact.attempts + 1,
            node=node,
            started_at=at,
            script_hash="h1",
        )
    )


async def finish(
    storage: SqliteStorage,
    attempt: Attempt,
    outcome: str = "answered",
    *,
    state: str = "done",
    next_at: float = T0 + 3600,
    **fields: Any,
) -> Attempt:
    finished = attrs.evolve(attempt, outcome=outcome, ended_at=attempt.started_at + 30, **fields)
    await storage.finish_attempt(finished, contact_state=state, next_at=next_at)  # type: ignore[arg-type]
    return finished


async def dial(
    storage: SqliteStorage, contact: Contact, outcome: str = "answered", **fields: Any
) -> Attempt:
    """Claim one due contact (it must be ``contact``), begin and finish an attempt."""
    (claimed,) = await claim(storage, contact.campaign_id, limit=1, now=contact.next_at)
    assert claimed.id == contact.id
    return await finish(storage, await begin(storage, claimed), outcome, **fields)


def read(storage: SqliteStorage, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Rows as another process would see them (a second connection)."""
    with closing(sqlite3.connect(storage.path)) as conn:
        return conn.execute(sql, params).fetchall()


def states(storage: SqliteStorage) -> dict[int, str]:
    return dict(read(storage, "SELECT id, state FROM contacts"))


async def test_is_a_campaign_store_and_a_storage(storage: SqliteStorage) -> None:
    assert isinstance(storage, CampaignStore)
    assert isinstance(storage, Storage)


# ───────────────────────── campaigns ─────────────────────────


async def test_campaigns_round_trip_and_update(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            row = CampaignRow(
                id="c1",
                name="春季回访",
                settings={"script": "demo", "windows": [["09:00", "12:00"]], "lines": 4},
                created_at=T0,
            )
            await storage.create_campaign(row)
            await storage.create_campaign(CampaignRow(id="c0", name="older", created_at=T0 - 1))
            assert await storage.get_campaign("c1") == row
            assert await storage.get_campaign("nope") is None
            running_row = attrs.evolve(
                row, state="paused", reason="trunk office failing: 503", started_at=T0 + 5
            )
            await storage.update_campaign(running_row)
            assert [r.id for r in await storage.list_campaigns()] == ["c0", "c1"]
            assert (await storage.list_campaigns())[1] == running_row


async def test_a_taken_name_or_id_is_refused(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await storage.create_campaign(CampaignRow(id="c1", name="spring"))
            with pytest.raises(ProviderError, match=r"'spring'.*campaigns\.name"):
                await storage.create_campaign(CampaignRow(id="c2", name="spring"))
            with pytest.raises(ProviderError, match=r"campaigns\.id"):
                await storage.create_campaign(CampaignRow(id="c1", name="autumn"))
            await storage.create_campaign(CampaignRow(id="c2", name="autumn"))
            with pytest.raises(ProviderError, match="cannot rename campaign c2 to 'spring'"):
                await storage.update_campaign(CampaignRow(id="c2", name="spring"))
            with pytest.raises(ProviderError, match="no campaign c9"):
                await storage.update_campaign(CampaignRow(id="c9", name="winter"))
            assert [r.name for r in await storage.list_campaigns()] == ["spring", "autumn"]


# ───────────────────────── contacts ─────────────────────────


async def test_contacts_get_ids_and_page_in_id_order(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, "c1", contacts=5)
            await new_campaign(storage, "c2", contacts=2)
            first = await storage.campaign_contacts("c1", limit=2)
            rest = await storage.campaign_contacts("c1", after_id=first[-1].id)
            assert [c.number for c in first + rest] == [number(n) for n in range(5)]
            assert len({c.id for c in first + rest}) == 5
            assert first[0] == Contact(
                id=first[0].id,
                campaign_id="c1",
                number=number(0),
                variables={"name": "客户0"},
                source_line=2,
            )
            assert await storage.campaign_numbers("c2") == {number(0), number(1)}
            assert await storage.campaign_contacts("c1", limit=0) == []


async def test_a_number_twice_in_a_campaign_refuses_the_whole_batch(
    storage: SqliteStorage,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, "c1", contacts=1)
            batch = [
                Contact(campaign_id="c1", number=number(7), source_line=3),
                Contact(campaign_id="c1", number=number(0), source_line=4),
            ]
            with pytest.raises(ProviderError, match=rf"\{number(0)} \(line 4\) of campaign c1"):
                await storage.add_contacts(batch)
            assert await storage.campaign_numbers("c1") == {number(0)}
            with pytest.raises(ValueError, match=r"0101234 \(line 9\).*not E\.164"):
                await storage.add_contacts(
                    [Contact(campaign_id="c1", number="0101234", source_line=9)]
                )
            with pytest.raises(ProviderError, match="FOREIGN KEY"):
                await storage.add_contacts([Contact(campaign_id="c9", number=number(1))])


async def test_counts_and_next_due(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=4, next_at=T0)
            assert await storage.next_due("c1") == T0
            await claim(storage, now=T0 + 1, limit=2)
            assert await storage.contact_counts("c1") == {"leased": 2, "pending": 2}
            assert await storage.next_due("c1") == contacts[2].next_at
            await claim(storage, now=T0 + 10)
            assert await storage.next_due("c1") is None
            assert await storage.contact_counts("c9") == {}


# ───────────────────────── the lead queue ─────────────────────────


async def test_claims_take_due_pending_contacts_oldest_first(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=5, next_at=T0)
            await new_campaign(storage, "c2", contacts=3)
            # due at T0..T0+3; the one due at T0+4 is not yet due
            first = await claim(storage, now=T0 + 3, limit=2)
            assert [c.id for c in first] == [contacts[0].id, contacts[1].id]
            assert {(c.state, c.lease_owner, c.lease_until) for c in first} == {
                ("leased", NODE, T0 + 3 + LEASE)
            }
            second = await claim(storage, now=T0 + 3, limit=9, owner=OTHER_NODE)
            assert [c.id for c in second] == [contacts[2].id, contacts[3].id]
            assert await claim(storage, now=T0 + 3) == []
            assert await claim(storage, now=T0 + 3, limit=0) == []
            assert states(storage)[contacts[4].id] == "pending"
            assert await storage.contact_counts("c2") == {"pending": 3}


async def test_claims_break_next_at_ties_by_id(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await storage.create_campaign(CampaignRow(id="c1", name="c1"))
            await storage.add_contacts(
                [Contact(campaign_id="c1", number=number(n), next_at=T0) for n in range(3)]
                + [Contact(campaign_id="c1", number=number(9), next_at=T0 - 1)]
            )
            claimed = await claim(storage, limit=4)
            assert [c.number for c in claimed] == [number(9), number(0), number(1), number(2)]


async def test_two_stores_claiming_one_file_never_share_a_contact(tmp_path: Path) -> None:
    """Two daemons (two connections, two threads) claim from the same file at once."""
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as a, running(make_storage(tmp_path)) as b:
            await new_campaign(a, contacts=120, next_at=T0)
            got: dict[str, list[int]] = {NODE: [], OTHER_NODE: []}

            async def claimer(store: SqliteStorage, owner: str, size: int) -> None:
                # each stops at 70, so that both claim whichever the lock favours
                while len(got[owner]) < 70 and (
                    batch := await claim(store, now=T0 + 200, limit=size, owner=owner)
                ):
                    got[owner].extend(c.id for c in batch)
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claimer, a, NODE, 3)
                nursery.start_soon(claimer, b, OTHER_NODE, 2)
            assert not set(got[NODE]) & set(got[OTHER_NODE])
            assert len(got[NODE]) + len(got[OTHER_NODE]) == 120
            assert got[NODE] and got[OTHER_NODE]
            owners = dict(read(a, "SELECT id, lease_owner FROM contacts"))
            assert all(owners[i] == NODE for i in got[NODE])
            assert all(owners[i] == OTHER_NODE for i in got[OTHER_NODE])


async def test_claims_interleaved_from_two_owners(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=6, next_at=T0)
            order = []
            for owner in (NODE, OTHER_NODE, NODE, OTHER_NODE):
                order += [
                    (owner, c.id) for c in await claim(storage, now=T0 + 9, limit=2, owner=owner)
                ]
            assert [i for _, i in order] == [c.id for c in contacts]
            assert [o for o, _ in order] == [NODE, NODE, OTHER_NODE, OTHER_NODE, NODE, NODE]


async def test_expired_leases_go_back_but_calling_contacts_stay(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=3, next_at=T0)
            a, b, c = await claim(storage, now=T0 + 5)  # leases until T0 + 65
            await begin(storage, c)
            assert await storage.expire_leases(now=T0 + 5 + LEASE) == 0  # not before the end
            assert await storage.expire_leases(now=T0 + 5 + LEASE + 0.5) == 2
            found = {x.id: x for x in await storage.campaign_contacts("c1")}
            assert (found[a.id].state, found[a.id].lease_owner, found[a.id].lease_until) == (
                "pending",
                None,
                None,
            )
            assert found[a.id].next_at == contacts[0].next_at  # due as it was
            assert (found[c.id].state, found[c.id].lease_owner) == ("calling", NODE)
            again = await claim(storage, now=T0 + 100, owner=OTHER_NODE)
            assert [x.id for x in again] == [a.id, b.id]


async def test_renewing_extends_only_the_owners_leases(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=4, next_at=T0)
            mine = await claim(storage, now=T0 + 9, limit=2)
            theirs = await claim(storage, now=T0 + 9, limit=1, owner=OTHER_NODE)
            await begin(storage, mine[1])
            await storage.renew_leases(owner=NODE, lease_until=T0 + 500)
            until = dict(read(storage, "SELECT id, lease_until FROM contacts"))
            assert until[mine[0].id] == until[mine[1].id] == T0 + 500
            assert until[theirs[0].id] == T0 + 9 + LEASE
            assert await storage.expire_leases(now=T0 + 400) == 1  # theirs only
            assert states(storage)[mine[0].id] == "leased"


async def test_release_and_skip_take_only_leased_contacts(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=3, next_at=T0)
            a, b, c = await claim(storage, now=T0 + 9)
            await storage.release_contact(a.id, next_at=T0 + 900)
            await storage.skip_contact(b.id, outcome="do-not-call")
            rows = {x.id: x for x in await storage.campaign_contacts("c1")}
            assert (rows[a.id].state, rows[a.id].next_at, rows[a.id].lease_owner) == (
                "pending",
                T0 + 900,
                None,
            )
            assert (rows[b.id].state, rows[b.id].last_outcome, rows[b.id].lease_until) == (
                "skipped",
                "do-not-call",
                None,
            )
            with pytest.raises(StaleChange, match=f"contact {a.id} is pending; not released"):
                await storage.release_contact(a.id, next_at=T0)
            with pytest.raises(StaleChange, match=f"contact {b.id} is skipped; not skipped"):
                await storage.skip_contact(b.id, outcome="again")
            await begin(storage, c)
            with pytest.raises(StaleChange, match=f"contact {c.id} is calling by {NODE}"):
                await storage.release_contact(c.id, next_at=T0)
            assert states(storage)[c.id] == "calling"


# ───────────────────────── attempts ─────────────────────────


async def test_begin_counts_the_attempt_and_marks_the_contact_calling(
    storage: SqliteStorage,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            (contact,) = await new_campaign(storage, contacts=1, next_at=T0)
            first = await dial(storage, contact, "busy", state="pending", next_at=T0 + 50)
            assert (first.seq, first.id > 0) == (1, True)
            (again,) = await claim(storage, now=T0 + 50)
            assert again.attempts == 1
            second = await begin(storage, again, at=T0 + 51)
            assert second.seq == 2 and second.id > first.id
            (row,) = await storage.campaign_contacts("c1")
            assert (row.state, row.attempts, row.lease_owner) == ("calling", 2, NODE)
            assert await storage.open_attempts() == [second]


async def test_begin_refuses_a_contact_leased_by_another_node(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            a, b = await new_campaign(storage, contacts=2, next_at=T0)
            await claim(storage, now=T0 + 9, owner=OTHER_NODE, limit=1)
            with pytest.raises(
                StaleChange, match=f"{a.id} of campaign c1 is leased by {OTHER_NODE}"
            ):
                await begin(storage, a, node=NODE)
            with pytest.raises(StaleChange, match=f"contact {b.id} of campaign c1 is pending"):
                await begin(storage, b, node=NODE)
            assert read(storage, "SELECT count(*) FROM attempts") == [(0,)]
            assert states(storage) == {a.id: "leased", b.id: "pending"}


async def test_a_call_id_used_twice_begins_nothing(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=2, next_at=T0)
            a, b = await claim(storage, now=T0 + 9)
            first = await begin(storage, a)
            duplicate = Attempt(
                campaign_id="c1",
                contact_id=b.id,
                number=b.number,
                call_id=first.call_id,
                seq=1,
                node=NODE,
                started_at=T0,
            )
            with pytest.raises(ProviderError, match="call_id"):
                await storage.begin_attempt(duplicate)
            # the contact update before the refused insert was rolled back with it
            assert (b.id, "leased", 0) in read(storage, "SELECT id, state, attempts FROM contacts")
            assert await storage.open_attempts() == [first]


async def test_finish_files_the_outcome_and_moves_the_contact(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=1, next_at=T0)
            (leased,) = await claim(storage, now=T0 + 1)
            attempt = await begin(storage, leased, at=T0 + 2)
            finished = await finish(
                storage,
                attempt,
                "answered",
                sip_status=200,
                grade="A",
                tags=("가격 문의", "hot"),
                note="lead",
                state="done",
                next_at=T0 + 99,
            )
            ((stored, row),) = await storage.campaign_attempts("c1")
            assert stored == finished
            assert (row.state, row.next_at, row.last_outcome) == ("done", T0 + 99, "answered")
            assert (row.lease_owner, row.lease_until, row.attempts) == (None, None, 1)
            assert await storage.open_attempts() == []


async def test_a_second_finish_changes_nothing_and_says_so(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            (contact,) = await new_campaign(storage, contacts=1, next_at=T0)
            attempt = await dial(storage, contact, "busy", state="pending", next_at=T0 + 10)
            before = (
                read(storage, "SELECT * FROM attempts"),
                read(storage, "SELECT * FROM contacts"),
            )
            with pytest.raises(
                StaleChange,
                match=re.escape(f"attempt {attempt.id} (call {attempt.call_id}) was already")
                + r" finished \(busy\)",
            ):
                await finish(storage, attempt, "answered", state="done", grade="A")
            assert (
                read(storage, "SELECT * FROM attempts"),
                read(storage, "SELECT * FROM contacts"),
            ) == before
            with pytest.raises(StaleChange, match=r"attempt 999 .* does not exist"):
                await finish(storage, attrs.evolve(attempt, id=999), "busy")


async def test_finish_of_a_contact_no_longer_calling_rolls_back_whole(
    storage: SqliteStorage,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=1, next_at=T0)
            (leased,) = await claim(storage, now=T0 + 1)
            attempt = await begin(storage, leased)
            with closing(sqlite3.connect(storage.path)) as conn, conn:  # a hand edit gone wrong
                conn.execute("UPDATE contacts SET state = 'done', lease_owner = NULL")
            with pytest.raises(StaleChange, match=f"contact {leased.id} is done, not calling"):
                await finish(storage, attempt, "answered")
            assert await storage.open_attempts() == [attempt]  # the attempt stays open too


async def test_finish_refuses_arguments_that_would_break_the_books(
    storage: SqliteStorage,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage, contacts=1, next_at=T0)
            (leased,) = await claim(storage, now=T0 + 1)
            attempt = await begin(storage, leased)
            with pytest.raises(ValueError, match="without an outcome"):
                await storage.finish_attempt(attempt, contact_state="done", next_at=T0)
            with pytest.raises(ValueError, match="cannot move to 'leased'"):
                await finish(storage, attempt, "busy", state="leased")
            with pytest.raises(ValueError, match="begun with outcome"):
                await storage.begin_attempt(attrs.evolve(attempt, outcome="busy"))
            assert await storage.open_attempts() == [attempt]


async def test_an_attempt_open_at_a_crash_is_found_after_reopening(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await new_campaign(storage, contacts=2, next_at=T0)
            (a,) = await claim(storage, now=T0 + 1, limit=1)
            (b,) = await claim(storage, now=T0 + 1, limit=1, owner=OTHER_NODE)
            mine = await begin(storage, a, node=NODE)
            theirs = await begin(storage, b, node=OTHER_NODE)
        # the daemon stopped between INVITE and answer; a new one opens the file
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.expire_leases(now=T0 + 10_000) == 0  # calling: kept
            assert await storage.open_attempts(node=NODE) == [mine]
            assert await storage.open_attempts() == [mine, theirs]
            await finish(
                storage, mine, "interrupted", state="pending", note="reconciled: never answered"
            )
            assert await storage.open_attempts() == [theirs]
            assert states(storage) == {a.id: "pending", b.id: "calling"}


# ───────────────────────── bulk moves ─────────────────────────


async def test_cancel_moves_pending_contacts_only(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=4, next_at=T0)
            await new_campaign(storage, "c2", contacts=2)
            await dial(storage, contacts[0], "answered")
            await claim(storage, now=T0 + 1, limit=1)
            moved = await storage.set_contacts_state(
                "c1", from_states=("pending",), to_state="cancelled"
            )
            assert moved == 2
            assert sorted(states(storage).values()) == [
                "cancelled",
                "cancelled",
                "done",
                "leased",
                "pending",
                "pending",
            ]


async def test_redial_requeues_finished_contacts_by_outcome(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            a, b, c = await new_campaign(storage, contacts=3, next_at=T0)
            await dial(storage, a, "no_answer")
            await dial(storage, b, "busy")
            await dial(storage, c, "answered")
            moved = await storage.set_contacts_state(
                "c1",
                from_states=("done",),
                to_state="pending",
                outcomes=["no_answer", "busy"],
                next_at=T0 + 500,
            )
            assert moved == 2
            rows = {x.id: x for x in await storage.campaign_contacts("c1")}
            assert (rows[a.id].state, rows[a.id].next_at, rows[a.id].attempts) == (
                "pending",
                T0 + 500,
                1,
            )
            assert rows[c.id].state == "done"
            assert (
                await storage.set_contacts_state(
                    "c1", from_states=("done",), to_state="pending", outcomes=[]
                )
                == 0
            )


async def test_reset_counts_afresh_but_keeps_every_attempt(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            a, b, c, d = await new_campaign(storage, contacts=4, next_at=T0)
            await dial(storage, a, "answered")
            await dial(storage, b, "busy", state="pending", next_at=T0 + 100)
            (calling,) = await claim(storage, now=T0 + 2, limit=1)
            assert calling.id == c.id
            open_attempt = await begin(storage, calling)
            await claim(storage, now=T0 + 3, limit=1)  # d
            moved = await storage.set_contacts_state(
                "c1",
                from_states=("pending", "leased", "done", "skipped", "cancelled"),
                to_state="pending",
                reset_attempts=True,
                next_at=T0 + 10,
            )
            assert moved == 3
            rows = {x.id: x for x in await storage.campaign_contacts("c1")}
            assert {i: (r.state, r.attempts) for i, r in rows.items()} == {
                a.id: ("pending", 0),
                b.id: ("pending", 0),
                c.id: ("calling", 1),
                d.id: ("pending", 0),
            }
            assert rows[d.id].lease_owner is None  # the lease it held went with the move
            assert read(storage, "SELECT count(*) FROM attempts") == [(3,)]
            assert await storage.open_attempts() == [open_attempt]
            with pytest.raises(ValueError, match="open attempt"):
                await storage.set_contacts_state("c1", from_states=("calling",), to_state="pending")
            with pytest.raises(ValueError, match="cannot be moved to 'calling'"):
                await storage.set_contacts_state("c1", from_states=("done",), to_state="calling")


# ───────────────────────── figures and exports ─────────────────────────


def call(
    call_id: str,
    turns: list[tuple[str, str]],
    *,
    campaign_id: str = "c1",
    outcome: str = "answered",
    hangup_by: str | None = "callee",
) -> CallRecord:
    """A filed call whose transcript is (speaker, node) pairs."""
    return CallRecord(
        id=call_id,
        number=number(1),
        script="demo",
        trunk="office",
        status="ended",
        created_at=T0,
        hangup_by=hangup_by,  # type: ignore[arg-type]
        turns=[Turn(speaker, "…", node) for speaker, node in turns],  # type: ignore[arg-type]
        campaign_id=campaign_id,
        outcome=outcome,
    )


async def test_stats_and_funnel_on_a_hand_built_campaign(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            n1, n2, n3, n4, n5, _n6 = await new_campaign(storage, contacts=6, next_at=T0)
            await new_campaign(storage, "c2", contacts=1)
            await dial(storage, n1, "answered", grade="A")
            await dial(storage, n2, "answered", grade="B")
            await dial(storage, n3, "busy", state="pending", next_at=n3.next_at)
            await dial(storage, n3, "answered", grade="A")
            await dial(storage, n4, "answered")  # not graded
            await dial(
                storage, n5, "interrupted", state="pending", next_at=n5.next_at,
                note="reconciled: never dialled",
            )  # fmt: skip
            (again,) = await claim(storage, now=n5.next_at, limit=1)
            await begin(storage, again)  # still open
            (other,) = await storage.campaign_contacts("c2")
            await dial(storage, other, "answered", grade="A")

            R, C = "robot", "callee"
            for record in [
                # a robot prompt said twice at one node counts the call once there
                call("a1", [(R, "greet"), (C, "greet"), (R, "greet"), (C, "greet"),
                            (R, "price"), (C, "price"), (R, "bye")], hangup_by="robot"),
                call("a2", [(R, "greet"), (C, "greet"), (R, "price"), (C, "price")]),
                call("a3", [(R, "greet")]),
                call("a4", [(R, "greet"), (C, "greet")]),
                # neither an unanswered call nor another campaign's call counts
                call("x1", [(R, "voicemail")], outcome="no_answer"),
                call("x2", [(R, "greet"), (R, "price")], campaign_id="c2"),
            ]:  # fmt: skip
                await storage.save_call(record)

            assert await storage.campaign_stats("c1") == CampaignStats(
                contacts={"done": 4, "calling": 1, "pending": 1},
                outcomes={"answered": 4, "busy": 1, "interrupted": 1},
                grades={"A": 2, "B": 1},
                reached={"greet": 4, "price": 2, "bye": 1},
                last_node={"bye": 1, "price": 1, "greet": 2},
                hangups={"price": 1, "greet": 2},
                attempts=7,
                reconciled=1,
            )
            empty = await storage.campaign_stats("c9")
            assert (empty.attempts, empty.contacts, empty.reached) == (0, {}, {})


async def test_a_call_saved_again_moves_its_funnel_figures(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await new_campaign(storage)
            R, C = "robot", "callee"
            await storage.save_call(call("a1", [(R, "greet")], outcome=None))  # type: ignore[arg-type]
            await storage.save_call(call("a1", [(R, "greet"), (C, "greet"), (R, "price")]))
            stats = await storage.campaign_stats("c1")
            assert (stats.reached, stats.last_node, stats.hangups) == (
                {"greet": 1, "price": 1},
                {"price": 1},
                {"price": 1},
            )


async def test_export_pages_attempts_with_their_contacts(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=3, next_at=T0)
            await new_campaign(storage, "c2", contacts=1)
            (other,) = await storage.campaign_contacts("c2")
            made = []
            for contact in contacts:
                made.append(await dial(storage, contact, "busy", state="pending", next_at=T0 + 9))
                await dial(storage, other, "busy", state="pending", next_at=other.next_at)
            (again,) = await claim(storage, now=T0 + 9, limit=1)
            made.append(await begin(storage, again))  # an open attempt is exported too
            first = await storage.campaign_attempts("c1", limit=3)
            rest = await storage.campaign_attempts("c1", after_id=first[-1][0].id, limit=3)
            assert [a for a, _ in first + rest] == made
            assert [c.number for _, c in first + rest] == [
                contacts[0].number, contacts[1].number, contacts[2].number, contacts[0].number,
            ]  # fmt: skip
            assert first[0][1].state == "calling"  # the contact as it is now
            assert await storage.campaign_attempts("c1", after_id=made[-1].id) == []
            assert await storage.campaign_attempts("c1", limit=0) == []


# ───────────────────────── compliance ─────────────────────────


async def test_dnc_add_counts_new_numbers_and_updates_old_ones(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            assert await storage.dnc_add([number(1), number(2)], reason="asked", at=T0) == 2
            assert (
                await storage.dnc_add(
                    [number(2), number(3), number(3)], reason="complaint", at=T0 + 5
                )
                == 1
            )
            assert await storage.dnc_numbers() == [
                (number(1), "asked", T0),
                (number(2), "complaint", T0 + 5),
                (number(3), "complaint", T0 + 5),
            ]
            assert await storage.dnc_contains(number(2))
            assert not await storage.dnc_contains(number(4))
            assert await storage.dnc_remove([number(2), number(4), number(2)]) == 1
            assert not await storage.dnc_contains(number(2))
            with pytest.raises(ValueError, match=r"'138 0013 8000' is not an E\.164 number"):
                await storage.dnc_add([number(5), "138 0013 8000"], reason="x", at=T0)
            assert not await storage.dnc_contains(number(5))


async def test_answered_since_counts_across_campaigns(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            for campaign_id in ("c1", "c2"):
                await storage.create_campaign(CampaignRow(id=campaign_id, name=campaign_id))
                await storage.add_contacts(
                    [Contact(campaign_id=campaign_id, number=number(n)) for n in (1, 2)]
                )
            by_campaign = {}
            for campaign_id in ("c1", "c2"):
                by_campaign[campaign_id] = {
                    c.number: c for c in await storage.campaign_contacts(campaign_id)
                }
            for campaign_id, at in (("c1", T0), ("c2", T0 + 100)):
                (contact,) = await claim(storage, campaign_id, now=T0 + 200, limit=1)
                assert contact.number == number(1)
                await finish(storage, await begin(storage, contact, at=at), "answered")
            (contact,) = await claim(storage, "c1", now=T0 + 200, limit=1)
            await finish(storage, await begin(storage, contact, at=T0 + 150), "busy")
            assert await storage.answered_since(number(1), T0) == 2
            assert await storage.answered_since(number(1), T0 + 100) == 1  # at since counts
            assert await storage.answered_since(number(1), T0 + 100.5) == 0
            assert await storage.answered_since(number(2), 0) == 0  # busy is not answered


async def test_audit_entries_are_newest_first(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            for n in range(3):
                await storage.audit(
                    AuditEntry(at=T0 + n, user="ops", action="campaign.start", params={"n": n})
                )
            assert await storage.audit_entries(limit=2) == [
                AuditEntry(at=T0 + 2, user="ops", action="campaign.start", params={"n": 2}),
                AuditEntry(at=T0 + 1, user="ops", action="campaign.start", params={"n": 1}),
            ]
            assert len(await storage.audit_entries()) == 3
            assert await storage.audit_entries(limit=0) == []


# ───────────────────────── the queue under random operations ─────────────────────────


# ───────────────────────── the outbox ─────────────────────────


async def test_outbox_hands_out_due_items_oldest_due_first(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            late = await storage.outbox_put("wechat", {"id": "n1", "text": "张三"}, due_at=20.0)
            early = await storage.outbox_put("wechat", {"id": "n2"}, due_at=10.0)
            tie = await storage.outbox_put("wechat", {"id": "n3"}, due_at=20.0)
            await storage.outbox_put("wechat", {"id": "n4"}, due_at=30.0)  # not due yet
            await storage.outbox_put("webhook", {"id": "n5"}, due_at=0.0)  # another notifier
            due = await storage.outbox_due("wechat", now=20.0, limit=10)
            assert [item.id for item in due] == [early, late, tie]
            assert due[1] == OutboxItem(
                id=late, notifier="wechat", payload={"id": "n1", "text": "张三"}, due_at=20.0
            )
            assert [i.id for i in await storage.outbox_due("wechat", now=20.0, limit=2)] == [
                early,
                late,
            ]
            assert await storage.outbox_due("wechat", now=20.0, limit=0) == []


async def test_outbox_done_items_are_not_due_again(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            first = await storage.outbox_put("wechat", {"id": "n1"}, due_at=1.0)
            second = await storage.outbox_put("wechat", {"id": "n2"}, due_at=2.0)
            await storage.outbox_done(first, at=5.0)
            assert [i.id for i in await storage.outbox_due("wechat", now=9.0, limit=9)] == [second]
            with pytest.raises(StaleChange, match=f"outbox item {first} was already done at 5.0"):
                await storage.outbox_done(first, at=6.0)
            with pytest.raises(StaleChange, match="outbox item 999 does not exist"):
                await storage.outbox_done(999, at=6.0)


async def test_outbox_retry_counts_tries_and_moves_the_item_back(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            first = await storage.outbox_put("wechat", {"id": "n1"}, due_at=1.0)
            second = await storage.outbox_put("wechat", {"id": "n2"}, due_at=2.0)
            await storage.outbox_retry(first, due_at=60.0, error="429 rate limited")
            await storage.outbox_retry(first, due_at=70.0, error="timeout")
            assert [i.id for i in await storage.outbox_due("wechat", now=65.0, limit=9)] == [second]
            due = await storage.outbox_due("wechat", now=70.0, limit=9)
            assert [i.id for i in due] == [second, first]
            assert (due[1].tries, due[1].last_error, due[1].due_at) == (2, "timeout", 70.0)
            assert (due[0].tries, due[0].last_error) == (0, None)
            await storage.outbox_done(first, at=71.0)
            with pytest.raises(StaleChange, match="already done"):
                await storage.outbox_retry(first, due_at=80.0, error="late")
            assert [i.id for i in await storage.outbox_due("wechat", now=99.0, limit=9)] == [second]


async def test_outbox_survives_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            item = await storage.outbox_put("webhook", {"calls": [{"grade": "A"}]}, due_at=3.0)
        async with running(make_storage(tmp_path)) as storage:
            (found,) = await storage.outbox_due("webhook", now=3.0, limit=5)
            assert (found.id, found.payload) == (item, {"calls": [{"grade": "A"}]})


OWNERS = (NODE, OTHER_NODE)
QUEUE_OPERATIONS = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(OWNERS), st.integers(0, 3)),
    st.tuples(st.just("begin"), st.sampled_from(OWNERS), st.integers(0, 9)),
    st.tuples(
        st.just("finish"),
        st.integers(0, 9),
        st.sampled_from(["pending", "done", "skipped"]),
        st.sampled_from(["answered", "busy", "no_answer"]),
    ),
    st.tuples(st.just("finish again"), st.integers(0, 9)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("renew"), st.sampled_from(OWNERS)),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 30.0, LEASE])),
)


@attrs.define
class Expected:
    """What the queue must hold: contact id → its state, lease, due time and attempt count."""

    contacts: dict[int, dict[str, Any]]
    open: dict[int, Attempt] = attrs.Factory(dict)  # attempt id → the open attempt
    finished: list[Attempt] = attrs.Factory(list)
    now: float = T0

    def pick(self, candidates: Sequence[Any], index: int) -> Any:
        return sorted(candidates)[index % len(candidates)] if candidates else None


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(QUEUE_OPERATIONS, max_size=30))
async def test_random_queue_operations_keep_every_contact_accounted_for(
    tmp_path: Path, operations: list[tuple]
) -> None:
    """Claims, begins, finishes, expiries and renewals in any order: every contact is in
    the state the rules say, held by at most one owner, calling exactly while it has one
    open attempt; finished attempts never change and none disappear."""
    storage = make_storage(tmp_path, f"{uuid.uuid4().hex}.db")
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            contacts = await new_campaign(storage, contacts=6, next_at=T0)
            expected = Expected(
                {
                    c.id: {"state": "pending", "owner": None, "until": None,
                           "next_at": c.next_at, "attempts": 0}
                    for c in contacts
                }
            )  # fmt: skip
            for operation in operations:
                await _apply(storage, expected, operation)
                _check(storage, expected)


async def _apply(storage: SqliteStorage, expected: Expected, operation: tuple) -> None:
    kind, *args = operation
    now, rows = expected.now, expected.contacts
    if kind == "claim":
        owner, limit = args
        due = sorted(
            (row["next_at"], i)
            for i, row in rows.items()
            if row["state"] == "pending" and row["next_at"] <= now
        )
        claimed = await claim(storage, now=now, limit=limit, owner=owner)
        assert [c.id for c in claimed] == [i for _, i in due[:limit]]
        for contact in claimed:
            rows[contact.id].update(state="leased", owner=owner, until=now + LEASE)
    elif kind == "begin":
        owner, index = args
        held = [i for i, row in rows.items() if row["state"] == "leased" and row["owner"] == owner]
        contact_id = expected.pick(held, index)
        if contact_id is None:  # then any contact it does not hold is refused
            contact_id = expected.pick(list(rows), index)
            with pytest.raises(StaleChange):
                await storage.begin_attempt(_attempt(contact_id, owner, now))
            return
        attempt = await storage.begin_attempt(_attempt(contact_id, owner, now))
        rows[contact_id].update(state="calling", attempts=rows[contact_id]["attempts"] + 1)
        assert attempt.seq == rows[contact_id]["attempts"]
        expected.open[attempt.id] = attempt
    elif kind == "finish":
        index, state, outcome = args
        attempt_id = expected.pick(list(expected.open), index)
        if attempt_id is None:
            return
        attempt = expected.open.pop(attempt_id)
        finished = await finish(storage, attempt, outcome, state=state, next_at=now + 10)
        expected.finished.append(finished)
        rows[attempt.contact_id].update(state=state, owner=None, until=None, next_at=now + 10)
    elif kind == "finish again":
        (index,) = args
        if expected.finished:
            attempt = expected.finished[index % len(expected.finished)]
            with pytest.raises(StaleChange, match="already finished"):
                await finish(storage, attempt, "answered", state="done")
    elif kind == "expire":
        lapsed = [i for i, row in rows.items() if row["state"] == "leased" and row["until"] < now]
        assert await storage.expire_leases(now=now) == len(lapsed)
        for i in lapsed:
            rows[i].update(state="pending", owner=None, until=None)
    elif kind == "renew":
        (owner,) = args
        await storage.renew_leases(owner=owner, lease_until=now + LEASE)
        for row in rows.values():
            if row["owner"] == owner:
                row["until"] = now + LEASE
    else:
        (seconds,) = args
        expected.now += seconds


def _attempt(contact_id: int, node: str, now: float) -> Attempt:
    return Attempt(
        campaign_id="c1",
        contact_id=contact_id,
        number="+10000000000",
        call_id=f"call-{next(_calls)}",
        seq=0,
        node=node,
        started_at=now,
    )


def _check(storage: SqliteStorage, expected: Expected) -> None:
    found = {
        i: {"state": s, "owner": o, "until": u, "next_at": n, "attempts": a}
        for i, s, o, u, n, a in read(
            storage,
            "SELECT id, state, lease_owner, lease_until, next_at, attempts FROM contacts",
        )
    }
    assert found == expected.contacts
    opened = read(storage, "SELECT contact_id FROM attempts WHERE outcome IS NULL")
    calling = [i for i, row in found.items() if row["state"] == "calling"]
    assert sorted(i for (i,) in opened) == sorted(calling)  # one open attempt per calling
    begun = dict(read(storage, "SELECT contact_id, count(*) FROM attempts GROUP BY contact_id"))
    assert all(begun.get(i, 0) == row["attempts"] for i, row in found.items())
    # append-only: every attempt begun is there, the finished ones as they were finished
    attempts = {
        i: (outcome, ended_at, contact_id)
        for i, outcome, ended_at, contact_id in read(
            storage, "SELECT id, outcome, ended_at, contact_id FROM attempts"
        )
    }
    assert attempts == {
        **{a.id: (None, None, a.contact_id) for a in expected.open.values()},
        **{a.id: (a.outcome, a.ended_at, a.contact_id) for a in expected.finished},
    }


# ───────────────────────── indexes ─────────────────────────

BIG_TABLES = ("contacts", "attempts", "calls", "turns", "outbox")


async def test_no_campaign_query_reads_a_whole_big_table(storage: SqliteStorage) -> None:
    """Every statement the store runs, as SQLite plans it: none scans a table that grows
    with the calls made (a partial index may be scanned: it holds only what is asked)."""
    statements: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            await storage._in_thread(lambda db: db.conn.set_trace_callback(statements.append))
            a, *_ = await new_campaign(storage, contacts=3, next_at=T0)
            await storage.contact_counts("c1")
            await storage.next_due("c1")
            await storage.campaign_contacts("c1", after_id=a.id)
            await storage.campaign_numbers("c1")
            await dial(storage, a, "busy", state="pending", next_at=T0 + 9)
            (leased,) = await claim(storage, now=T0 + 1, limit=1)
            await storage.release_contact(leased.id, next_at=T0 + 2)
            (leased,) = await claim(storage, now=T0 + 2, limit=1)
            await storage.skip_contact(leased.id, outcome="do-not-call")
            await storage.renew_leases(owner=NODE, lease_until=T0 + 99)
            await storage.expire_leases(now=T0 + 99)
            await storage.open_attempts()
            await storage.open_attempts(node=NODE)
            await storage.answered_since(a.number, T0)
            await storage.campaign_stats("c1")
            await storage.campaign_attempts("c1", after_id=0)
            await storage.set_contacts_state("c1", from_states=["done"], to_state="pending")
            await storage.save_call(call("a1", [("robot", "greet")]))
            await storage.find_calls(campaign_id="c1", grade="A")
            await storage.unfinished_calls()
            item = await storage.outbox_put("wechat", {}, due_at=T0)
            await storage.outbox_due("wechat", now=T0, limit=5)
            await storage.outbox_retry(item, due_at=T0, error="e")
            await storage.outbox_done(item, at=T0)
            await storage.dnc_contains(a.number)
            await storage._in_thread(lambda db: db.conn.set_trace_callback(None))
    queries = [s for s in statements if s.split()[0].upper() in ("SELECT", "UPDATE", "WITH")]
    assert len(queries) > 25
    scans = re.compile(rf"^SCAN ({'|'.join(BIG_TABLES)})$")
    with closing(sqlite3.connect(storage.path)) as conn:
        for sql in queries:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert not [step for step in plan if scans.match(step)], (sql, plan)
