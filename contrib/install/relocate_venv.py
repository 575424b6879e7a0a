"""Make a virtual environment built under ``DESTDIR`` work at its final path.

``make install DESTDIR=/stage VENVDIR=/opt/waihu`` builds the environment in
``/stage/opt/waihu``, but a virtual environment is not relocatable: pip writes
the path it was built at into the ``#!`` line of every console script
(``bin/waihud``, ``bin/pip``), into the activate scripts and into
``pyvenv.cfg``. Once the staged tree is copied to ``/`` those would name
``/stage/...``, which no longer exists. This rewrites them to the final path,
as dh-virtualenv does for Debian packages, compiles the bytecode as if the
files lay at the final path (so tracebacks name ``/opt/waihu/...``; what venv
compiled at the staged path is compiled again), and then checks that no text
file or compiled module in the environment still names the staging path.

Run with any Python 3.11+ (the Makefile uses the one that built the
environment)::

    python3 relocate_venv.py STAGED FINAL

``STAGED`` equal to ``FINAL`` (no DESTDIR) only compiles the bytecode.

What it is not: a general relocation tool. It knows the files ``python -m
venv`` and pip write into ``bin/`` and ``pyvenv.cfg``; anything else naming the
staging path is reported, not guessed at.

Error handling: a file still naming the staging path after the rewrite, or a
module that does not compile, is printed (one line each) and the exit status
is 1, so ``make install`` stops instead of installing a broken environment.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

# pip and venv write the environment's path only into these: console-script
# shebangs and activate scripts in bin/, and the "command" line of pyvenv.cfg
REWRITTEN = ("bin", "pyvenv.cfg")
# a file with a NUL byte in its first block is binary (the bin/python symlinks
# are skipped as links; compiled extensions never name the venv)
BINARY_PROBE = 8192
EXIT_BROKEN = 1
USAGE = "usage: relocate_venv.py STAGED FINAL (the environment's staged and final paths)"


def _is_text(path: Path) -> bool:
    with path.open("rb") as file:
        return b"\0" not in file.read(BINARY_PROBE)


def _files(root: Path) -> list[Path]:
    """Regular files under ``root`` (a file or a directory), not following links."""
    if root.is_symlink() or not root.exists():
        return []
    if root.is_file():
        return [root]
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]


def rewrite(staged: Path, final: Path) -> list[Path]:
    """Replace ``staged`` by ``final`` in the environment's scripts; the files changed."""
    old, new = str(staged).encode(), str(final).encode()
    changed = []
    for name in REWRITTEN:
        for path in _files(staged / name):
            data = path.read_bytes()
            if old in data and _is_text(path):
                path.write_bytes(data.replace(old, new))
                changed.append(path)
    return changed


def drop_stale_bytecode(staged: Path) -> list[Path]:
    """Remove compiled modules naming ``staged``; the files removed.

    ``python -m venv`` compiles the pip and setuptools it puts in at the staged
    path, and a compiled module that is up to date is not compiled again.
    """
    old = str(staged).encode()
    stale = [p for p in staged.rglob("*.pyc") if old in p.read_bytes()]
    for path in stale:
        path.unlink()
    return stale


def compile_bytecode(staged: Path, final: Path) -> bool:
    """Compile every module, naming the final path in code objects; False if one failed."""
    ok = True
    for lib in sorted((staged / "lib").glob("python3*")):
        ok &= bool(
            compileall.compile_dir(
                lib,
                quiet=1,
                workers=0,  # one per CPU
                stripdir=str(staged),
                prependdir=str(final),
            )
        )
    return ok


def leftovers(staged: Path) -> list[Path]:
    """Text files and compiled modules in the environment that still name the staging path."""
    old = str(staged).encode()
    return [
        p for p in _files(staged) if (p.suffix == ".pyc" or _is_text(p)) and old in p.read_bytes()
    ]


def main(argv: list[str]) -> int:
    """Relocate, compile, check; the exit status."""
    if len(argv) != 2:
        print(USAGE, file=sys.stderr)
        return EXIT_BROKEN
    # pip writes absolute paths, also for a relative DESTDIR
    staged, final = Path(os.path.abspath(argv[0])), Path(argv[1])
    if not final.is_absolute():
        print(f"relocate_venv: {final}: the final path must be absolute", file=sys.stderr)
        return EXIT_BROKEN
    if not (staged / "pyvenv.cfg").is_file():
        print(f"relocate_venv: {staged}: no pyvenv.cfg, not a venv", file=sys.stderr)
        return EXIT_BROKEN
    moved = staged != final
    if moved:
        rewrite(staged, final)
        drop_stale_bytecode(staged)
    if not compile_bytecode(staged, final):
        print(f"relocate_venv: some modules under {staged} did not compile", file=sys.stderr)
        return EXIT_BROKEN
    stale = leftovers(staged) if moved else []
    for path in stale:
        print(f"relocate_venv: {path} still names {staged}", file=sys.stderr)
    return EXIT_BROKEN if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
