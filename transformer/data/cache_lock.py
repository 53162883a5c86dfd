"""One preparation at a time per prepared directory, however many processes (runs, torchrun nodes)
share the cache, on a local disk or a shared filesystem (NFS, Lustre).

    with CacheLock(root / ".train-1a2b.lock", what=f"{root / 'train-1a2b'}"):
        ...  # one process at a time, on any host, gets here; the others wait, saying for whom

The lock is a directory: `mkdir` creates it or fails, atomically, on every filesystem that
matters (an fcntl lock needs NFS's lock daemon, and O_EXCL files were unreliable on old NFS
clients). Its owner writes `owner` into it (host, pid, a random token, when it started, and a
heartbeat counter that a thread rewrites every HEARTBEAT_S seconds while the owner works) and
removes the directory when done. A process that finds it taken says whom it waits for, then polls.

A lock is stale, and broken, when its owner is a process of this host that is gone (killed, crashed),
or when its `owner` file has not changed for STALE_S seconds (a dead or unreachable host). Clocks of
other hosts are never compared with ours: the waiter times, on its own clock, how long the file has
stayed the same (re-reading a file that another NFS client has rewritten and closed shows the new
content: close-to-open consistency).

The lock saves work; the data's safety never depends on it: a preparation is renamed into place
only if nothing complete is there (prepare.py), so even two preparers after a wrongly broken lock
leave one complete directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

HEARTBEAT_S = 10.0  # how often the owner rewrites its `owner` file
STALE_S = 180.0  # an `owner` file unchanged this long (NFS caches attributes for up to 60 s)
POLL_S = (0.2, 5.0)  # a waiter polls, first often, then every 5 s at most
OWNER_FILE = "owner"
HOST = socket.gethostname()


class CacheLock:
    """An exclusive lock for preparing `what`, held in the directory `path` (see the module)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.token = secrets.token_hex(8)  # tells our lock from a later owner's with our pid
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def __enter__(self) -> CacheLock:
        self._acquire()
        self._heart = threading.Thread(target=self._beat, name="cache-lock", daemon=True)
        self._heart.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._heart is not None:
            self._heart.join()
        if (_read(self.path / OWNER_FILE) or "").split()[2:3] == [self.token]:  # still ours
            _remove(self.path, f"{self.path.name}.released-{HOST}-{os.getpid()}")

    def _owner_line(self, beat: int) -> str:
        return f"{HOST} {os.getpid()} {self.token} {self.started.replace(' ', 'T')} {beat}\n"

    def _acquire(self) -> None:
        """Take the lock, waiting for its owner if it has one, and breaking it if it is stale."""
        seen, unchanged_since, told, poll = None, time.monotonic(), False, POLL_S[0]
        while True:
            try:
                self.path.mkdir()
            except FileExistsError:
                pass
            else:
                try:
                    (self.path / OWNER_FILE).write_text(self._owner_line(0), encoding="utf-8")
                except OSError:  # a full disk, say: leave no lock that nobody owns
                    shutil.rmtree(self.path, ignore_errors=True)
                    raise
                return
            text = _read(self.path / OWNER_FILE)
            if text is None and not self.path.exists():  # released just now: try again
                continue
            if text != seen:
                seen, unchanged_since = text, time.monotonic()
            host, pid, _, started, *_ = (text or "").split() + ["?"] * 4
            owner = f"process {pid} on {host}"
            if host == HOST and pid.isdigit() and not process_alive(int(pid)):
                self._break(f"{owner} is gone")
            elif time.monotonic() - unchanged_since > STALE_S:
                self._break(f"{owner} has shown no sign of life for {STALE_S:.0f} s")
            else:
                if not told and text:
                    print(
                        f"Waiting for {owner}, which has been preparing {self.what} since "
                        f"{started.replace('T', ' ')} (its lock: {self.path})",
                        file=sys.stderr,  # seen from every torchrun rank (stdout: rank 0's only)
                        flush=True,
                    )
                    told = True
                time.sleep(poll)
                poll = min(poll * 2, POLL_S[1])

    def _break(self, reason: str) -> None:
        print(f"Removing the stale lock {self.path}: {reason}", file=sys.stderr, flush=True)
        _remove(self.path, f"{self.path.name}.stale-{HOST}-{os.getpid()}-{self.token}")

    def _beat(self) -> None:
        """Rewrite the owner file every HEARTBEAT_S: the sign of life that waiters watch."""
        beat = 0
        while not self._stop.wait(HEARTBEAT_S):
            beat += 1
            try:
                (self.path / OWNER_FILE).write_text(self._owner_line(beat), encoding="utf-8")
            except OSError:  # the lock was broken under us, or the disk is gone: nothing to do
                return


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _remove(path: Path, aside_name: str) -> None:
    """Remove a lock directory atomically for others (rename it aside, then delete it); nothing if
    it is already gone (another waiter broke it first)."""
    aside = path.with_name(aside_name)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True
