"""Process bookkeeping for the embedded control plane: spawning with per-component logs, pid files, finding
stale processes of a state directory and terminating them (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Spawned",
    "is_alive",
    "log_tail",
    "processes_of_state_dir",
    "read_pid_file",
    "spawn",
    "terminate",
]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGKILL this process when the thread that started it exits."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Spawned:
    """A component process started by this Python process."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    pid_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> Spawned:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``; record its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"# {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    pid_path.write_text(f"{popen.pid}\n")
    return Spawned(name, popen, log_path)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself contain spaces or parentheses.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] in ("Z", "X")


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def binary_name(pid: int) -> str:
    """Base name of the program a process runs ('' if it is gone)."""
    argv = _cmdline(pid)
    return os.path.basename(argv[0]) if argv else ""


def belongs_to(pid: int, state_dir: Path, binaries: Iterable[str]) -> bool:
    """True if ``pid`` runs one of ``binaries`` with an argument under ``state_dir``."""
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) not in set(binaries):
        return False
    marker = f"{state_dir}{os.sep}"
    return any(marker in arg for arg in argv[1:])


def processes_of_state_dir(state_dir: Path, binaries: Iterable[str]) -> list[int]:
    """Live processes of the given component binaries whose arguments point into ``state_dir``."""
    names = set(binaries)
    found: list[int] = []
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != own and belongs_to(pid, state_dir, names) and is_alive(pid):
            found.append(pid)
    return sorted(found)


def terminate(
    pids: Iterable[int],
    children: Iterable[subprocess.Popen[bytes]] = (),
    grace: float = 10.0,
) -> list[int]:
    """SIGTERM every pid, wait up to ``grace`` seconds, SIGKILL what is left. Reaps ``children`` (our own
    Popen objects) so no zombies remain. Returns the pids that had to be killed."""
    children = list(children)
    by_pid = {p.pid: p for p in children}
    targets = sorted(set(pids) | set(by_pid))

    def alive(pid: int) -> bool:
        popen = by_pid.get(pid)
        if popen is not None:
            return popen.poll() is None
        return is_alive(pid)

    # Components run in their own session (process group id == pid): signal the whole group, so that
    # anything they started goes too.
    leaders = set()
    for pid in targets:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                leaders.add(pid)

    def send(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pid in leaders:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    for pid in targets:
        if alive(pid):
            send(pid, signal.SIGTERM)

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in targets):
        time.sleep(0.05)

    killed = [pid for pid in targets if alive(pid)]
    for pid in killed:
        send(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(pid) for pid in killed):
        time.sleep(0.05)
    for pid in leaders:  # stragglers of a group whose leader exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for popen in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1.0)
    return killed
