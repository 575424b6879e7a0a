"""Recording retention on a real directory tree."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from waihu.recordings import prune_recordings

TODAY = dt.date(2026, 11, 30)


def _day(root: Path, name: str, files: int) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"call-{i}.wav").write_bytes(b"x" * 100)


def test_dry_run_reports_and_keeps_then_prune_removes_only_old_days(tmp_path: Path) -> None:
    _day(tmp_path, "20261031", 2)  # 30 days before: older than 29
    _day(tmp_path, "20261101", 1)  # 29 days before: kept (not older than the cutoff)
    _day(tmp_path, "20261129", 3)
    (tmp_path / "notes").mkdir()  # not a day folder: never touched
    dry = prune_recordings(tmp_path, older_than_days=29, today=TODAY, dry_run=True)
    assert (dry.days, dry.files, dry.bytes) == (("20261031",), 2, 200)
    assert (tmp_path / "20261031").exists()
    done = prune_recordings(tmp_path, older_than_days=29, today=TODAY, dry_run=False)
    assert done.days == ("20261031",) and not done.errors
    assert not (tmp_path / "20261031").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261101", "20261129", "notes"]


def test_keeping_less_than_a_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        prune_recordings(tmp_path, older_than_days=0, today=TODAY, dry_run=True)


def test_a_missing_directory_prunes_nothing(tmp_path: Path) -> None:
    report = prune_recordings(tmp_path / "none", older_than_days=7, today=TODAY, dry_run=False)
    assert (report.days, report.files) == ((), 0)
