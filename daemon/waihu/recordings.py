"""Call recordings on disk: retention (delete those older than a number of days) and
reading one back in chunks for the control socket (``waihuctl call fetch``).

Recordings live under ``<recordings_dir>/<YYYYMMDD>/<call id>.wav`` (the day
the call was answered, local time). Pruning goes by that day folder, not by
file times, which a backup or a copy may have changed: every folder whose
day is more than ``days`` days before today is removed whole. A dry run
reports what would go and touches nothing — operators run one first.

The call records keep their ``recording`` path; ``call show`` of a pruned
call then points at a file that is gone, which says what happened.

``read_chunk`` reads one piece of a recording with the file's size, and for
the first piece the SHA-256 of the whole file, which the copy is checked
against once it is whole.

Error handling: a file that cannot be deleted is reported in ``errors`` and
the rest go on. Folders whose names are not dates are left alone.
``read_chunk`` raises ``OSError`` (``FileNotFoundError`` for a pruned file).

What it is not: the recorder (``waihu.media.recorder``), which writes them
(mode 0640, folders 0750).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from pathlib import Path

import attrs

__all__ = ["PruneReport", "prune_recordings", "read_chunk"]

DAY_FORMAT = "%Y%m%d"  # the recorder's day folders
HASH_BLOCK = 1 << 20  # bytes hashed at a time: a long call is tens of megabytes


@attrs.frozen
class PruneReport:
    """What a prune removed (or, dry, would remove)."""

    days: tuple[str, ...]
    files: int
    bytes: int
    dry_run: bool
    errors: tuple[str, ...] = ()


def prune_recordings(
    root: Path, *, older_than_days: int, today: dt.date, dry_run: bool
) -> PruneReport:
    """Remove the day folders under ``root`` older than ``older_than_days`` before ``today``.

    Blocking file work: call it in a worker thread.
    """
    if older_than_days < 1:
        raise ValueError(f"keep at least 1 day of recordings, not {older_than_days}")
    cutoff = today - dt.timedelta(days=older_than_days)
    days: list[str] = []
    files = size = 0
    errors: list[str] = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            day = dt.datetime.strptime(folder.name, DAY_FORMAT).date()
        except ValueError:
            continue  # not one of the recorder's folders
        if not folder.is_dir() or day >= cutoff:
            continue
        for path in folder.rglob("*"):
            if path.is_file():
                files += 1
                size += path.stat().st_size
        days.append(folder.name)
        if not dry_run:
            shutil.rmtree(folder, onerror=lambda _f, p, e: errors.append(f"{p}: {e[1]}"))
    return PruneReport(
        days=tuple(days), files=files, bytes=size, dry_run=dry_run, errors=tuple(errors)
    )


def read_chunk(path: Path, offset: int, length: int) -> tuple[int, bytes, str | None]:
    """``(size, data, sha256)``: the file's size, up to ``length`` bytes from ``offset``
    (none past the end), and when ``offset`` is 0 the hex SHA-256 of the whole file
    (else None). Blocking file work: call it in a worker thread.
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        digest = None
        if offset == 0:
            hasher = hashlib.sha256()
            while block := file.read(HASH_BLOCK):
                hasher.update(block)
            digest = hasher.hexdigest()
        file.seek(offset)
        return size, file.read(length), digest
