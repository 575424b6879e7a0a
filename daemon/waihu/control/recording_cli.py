"""``waihuctl call fetch`` and ``call play``: a call's recording, copied over the control socket.

The daemon's recordings are readable by the ``waihu`` group on the daemon's
machine; an operator elsewhere, or one who does not know where they are, gets
a copy through the control socket instead: ``call.recording`` replies carry
the WAV file in base64 chunks (each well under the protocol's line limit),
with the file's size, and with the first chunk the SHA-256 of the whole
file, which the copy is checked against once it is complete.

``fetch`` writes the copy beside its destination and renames it into place
only once it checks out, so a broken transfer leaves no half file behind;
it refuses to overwrite an existing file unless told to. ``play`` fetches
into a temporary folder and plays it with the first local audio player found
(``PLAYERS``), then removes it.

Both say the channel layout, as the daemon reports it: the recording is
stereo, the callee on the left channel and the robot on the right.

Error handling: failures are ``ControlError`` with a message for people, as
the daemon's own are (a file that exists, no player, a copy that does not
match), so that ``waihuctl`` prints them, as JSON with ``--json``, and exits 1.

What it is not: the daemon's side (``handlers.call_recording``), or the
recorder (``waihu.media.recorder``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from waihu.control.protocol import ControlError
from waihu.control.render import emit

if TYPE_CHECKING:  # local imports this module
    from waihu.control.local import DaemonLink

__all__ = ["PLAYERS", "Fetched", "fetch_recording", "play_recording"]

STDOUT = "-"  # -o -: the recording on standard output
# local players, in the order tried: PulseAudio/PipeWire, ALSA, sox, ffmpeg; each with
# the options that make it play one file quietly and exit
PLAYERS: tuple[tuple[str, ...], ...] = (
    ("paplay",),
    ("aplay", "-q"),
    ("play", "-q"),
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "error"),
)


@attrs.frozen
class Fetched:
    """A recording copied here: where, whose, and what it holds."""

    call_id: str
    path: Path | None  # None: written to standard output
    size: int
    sha256: str
    channels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "call_id": self.call_id,
            "file": str(self.path) if self.path is not None else STDOUT,
            "size": self.size,
            "sha256": self.sha256,
            "channels": {"left": self.channels[0], "right": self.channels[1]},
        }


def layout(channels: tuple[str, ...]) -> str:
    """``stereo: left = callee, right = robot``."""
    return f"stereo: left = {channels[0]}, right = {channels[1]}"


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ControlError(
            "bad_request", f"{path} exists; give --force to overwrite it, or -o another file"
        )


def _download(link: DaemonLink, call_id: str, into: BinaryIO) -> Fetched:
    """Every chunk of the call's recording written to the binary file ``into``, checked."""
    first = link.request("call.recording", {"id": call_id})
    whole = first["call_id"]  # the full id, if a prefix was given
    size, expected = first["size"], first["sha256"]
    hasher = hashlib.sha256()
    reply, received = first, 0
    while True:
        try:
            data = base64.b64decode(reply["data"], validate=True)
        except binascii.Error as exc:
            raise ControlError(
                "parse_error", f"recording of call {whole}: bad base64: {exc}"
            ) from None
        if reply["size"] != size:
            raise ControlError(
                "unavailable", f"the recording of call {whole} changed while it was copied"
            )
        into.write(data)
        hasher.update(data)
        received += len(data)
        if received >= size or not data:
            break
        reply = link.request("call.recording", {"id": whole, "offset": received})
    if received != size or hasher.hexdigest() != expected:
        raise ControlError(
            "unavailable",
            f"the copy of call {whole}'s recording does not match the daemon's file "
            f"({received} of {size} bytes, SHA-256 {hasher.hexdigest()[:12]}… against "
            f"{expected[:12]}…); try again",
        )
    return Fetched(whole, None, size, expected, tuple(first["channels"]))


def fetch_to(link: DaemonLink, call_id: str, output: str | None, force: bool) -> Fetched:
    """Copy the recording to ``output`` (default ``ID.wav`` here; ``-``: standard output)."""
    if output == STDOUT:
        fetched = _download(link, call_id, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return fetched
    if output is not None:
        _refuse_existing(Path(output), force)  # before the transfer, not after it
    # into a hidden file beside the destination, renamed into place once it checks out
    folder = Path(output).parent if output is not None else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(prefix=".waihu-recording-", suffix=".wav", dir=folder)
    except OSError as exc:
        raise ControlError("bad_request", f"cannot write in {folder}/: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            fetched = _download(link, call_id, file)
        path = Path(output) if output is not None else Path(f"{fetched.call_id}.wav")
        _refuse_existing(path, force)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ControlError("bad_request", f"cannot write {output or folder}: {exc}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return attrs.evolve(fetched, path=path)


def fetch_recording(link: DaemonLink, id: str, output: str | None, force: bool) -> int:
    """``waihuctl call fetch ID [-o FILE] [--force]``."""
    fetched = fetch_to(link, id, output, force)
    if link.as_json and fetched.path is not None:
        emit(json.dumps(fetched.to_json(), ensure_ascii=False, indent=2), sys.stdout)
        return 0
    where = "standard output" if fetched.path is None else str(fetched.path)
    report = sys.stderr if fetched.path is None else sys.stdout  # keep the audio clean
    emit(
        f"call {fetched.call_id}: recording written to {where} ({fetched.size} bytes, "
        f"SHA-256 checked); {layout(fetched.channels)}",
        report,
    )
    return 0


def find_player() -> tuple[str, ...] | None:
    """The command line (without the file) of the first local audio player found, or None."""
    for command in PLAYERS:
        found = shutil.which(command[0])
        if found is not None:
            return (found, *command[1:])
    return None


def play_recording(link: DaemonLink, id: str) -> int:
    """``waihuctl call play ID``: fetch to a temporary file, play it, remove it."""
    player = find_player()
    if player is None:
        names = ", ".join(command[0] for command in PLAYERS)
        raise ControlError(
            "unavailable",
            f"no audio player found here (looked for {names}); "
            f"'waihuctl call fetch {id}' copies the recording to a file instead",
        )
    with tempfile.TemporaryDirectory(prefix="waihu-play-") as folder:
        fetched = fetch_to(link, id, str(Path(folder) / "recording.wav"), force=True)
        name = Path(player[0]).name
        if link.as_json:
            emit(json.dumps({**fetched.to_json(), "player": name}, ensure_ascii=False), sys.stdout)
        else:
            emit(
                f"call {fetched.call_id}: playing with {name}; {layout(fetched.channels)}",
                sys.stdout,
            )
        sys.stdout.flush()
        done = subprocess.run([*player, str(fetched.path)], check=False)
    if done.returncode != 0:
        raise ControlError(
            "unavailable",
            f"{name} exited with status {done.returncode}; "
            f"'waihuctl call fetch {fetched.call_id}' copies the recording to a file instead",
        )
    return 0
