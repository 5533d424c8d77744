"""One trainer per result: a lock file per run, beside its checkpoint folder, naming the process that trains it.

`<results_dir>/checkpoints/.../seed=<n>.lock` is locked with `fcntl.flock` and holds its holder's record (host,
pid, start time); the holder refreshes the file's mtime while it trains (a heartbeat thread) and removes the
file when it lets go. A second process finds the lock held and does not train that seed: it names the holder
in one line and waits for its result or moves on (`lock.when_held`). A holder that is gone leaves the lock to
the next process, with a line saying so: on the same host the kernel frees the lock of a dead process (the
record then names a pid that no longer runs); a lock still held for a holder on another host whose heartbeat
stopped more than `lock.stale_minutes` ago (a crashed NFS client whose lock the server keeps) is broken by
removing its file, one breaker at a time.

Where flock holds (README, Reliability): local file systems; NFS v4 and v3 (Linux turns flock into NFS byte-range
locks, v3 through lockd/statd); Lustre mounted with `-o flock` (`localflock` locks one node only: two nodes
would both train); GPFS/Spectrum Scale, BeeGFS (with global file locks on), CephFS. Where flock fails with
ENOSYS/EOPNOTSUPP/ENOLCK (Lustre without `flock`, some FUSE file systems) the runner says so once and goes on
with the record alone: a live record still keeps a second process away, but two processes starting in the same
instant could both train. Heartbeats compare file times with this host's clock: hosts' clocks must agree within
a small part of `lock.stale_minutes`.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from dora_bench.results import RunLocation
from dora_bench.storage import writing

HOST = socket.gethostname()
UNSUPPORTED = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK})  # flock not offered by the file system
POLL_S = 1.0   # how often a waiting process looks at a held lock


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written into the lock file when it is taken."""
    host: str
    pid: int
    started: float                    # time.time() when the lock was taken
    process_start: str | None = None  # /proc/<pid>/stat start time: tells the holder from a later process with its pid
    group: str | None = None          # the process group of a multi-process run (its ranks > 0 wait for it)

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))})"


@dataclass(frozen=True)
class LockState:
    """What a lock file says: its holder (None: no record yet or none readable), how long since its last
    heartbeat, and whether that holder is still there (`why` says why not)."""
    holder: Holder | None
    heartbeat_age_s: float
    alive: bool
    why: str = ""
    inode: tuple[int, int] = (0, 0)
    mtime_ns: int = 0


def this_process(group: str | None = None) -> Holder:
    return Holder(HOST, os.getpid(), time.time(), _process_start(os.getpid()), group)


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()   # after "pid (comm)": field 3 (state) onwards
    return fields[19] if len(fields) > 19 else None   # field 22: start time in clock ticks since boot


def process_alive(holder: Holder) -> bool:
    """The holder's process (on this host) still runs, and is the same process, not a later one with its pid."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # it exists, under another user
    now = _process_start(holder.pid)
    return holder.process_start is None or now is None or now == holder.process_start


def judge(holder: Holder | None, heartbeat_age_s: float, stale_s: float) -> tuple[bool, str]:
    """(alive, why not): on this host the process itself decides; elsewhere the heartbeat's age."""
    if holder is not None and holder.host == HOST:
        if process_alive(holder):
            return True, ""
        return False, f"process {holder.pid} is not running"
    if heartbeat_age_s < stale_s:
        return True, ""
    return False, (f"no heartbeat for {heartbeat_age_s / 60:.1f} min (lock.stale_minutes={stale_s / 60:g})"
                   if holder is not None else f"no holder record for {heartbeat_age_s / 60:.1f} min")


def _parse(text: str) -> Holder | None:
    try:
        data = json.loads(text)
        return Holder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None   # empty (being written) or not ours


def _state(text: str, stat: os.stat_result, stale_s: float) -> LockState:
    holder = _parse(text)
    age = max(time.time() - stat.st_mtime, 0.0)
    alive, why = judge(holder, age, stale_s)
    return LockState(holder, age, alive, why, (stat.st_dev, stat.st_ino), stat.st_mtime_ns)


def inspect(path: Path, stale_s: float) -> LockState | None:
    """What a lock file says, without taking the lock (dora-bench-status); None when there is no lock file.
    Never call it from the process holding that lock: on NFS, closing any descriptor of a locked file
    releases the process's lock."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return _state(fh.read(4096), os.fstat(fh.fileno()), stale_s)
    except FileNotFoundError:
        return None


class RunLock:
    """The lock of one run. `try_acquire()` takes it or returns the holder's state; `release()` lets it go."""

    def __init__(self, path: Path, stale_s: float, group: str | None = None):
        self.path = Path(path)
        self.stale_s = stale_s
        self.group = group
        self.fd: int | None = None
        self.lost = False                # another process broke this lock while we held it
        self.kernel_locks = True         # False where the file system offers no flock (record only)
        self._made: list[Path] | None = None   # folders made for the lock file, deepest first (removed if left empty)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def try_acquire(self) -> LockState | None:
        """Take the lock (None), or the state of the holder that has it."""
        if self._made is None:
            self._made = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue   # another process removed the empty folder just now
            try:
                if self.kernel_locks:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    state = self._read(fd)
                    os.close(fd)
                    if self._breakable(state) and self._break(state):
                        continue   # the stale lock is gone: try again
                    return state
                if err.errno not in UNSUPPORTED:
                    os.close(fd)
                    raise
                self.kernel_locks = False
                print(f"[dora-bench] warning: {self.path.parent} offers no file locks (flock: [Errno {err.errno}] "
                      f"{err.strerror}); one trainer per result rests on the lock file's record alone here "
                      "(on Lustre, mount with -o flock)", file=sys.stderr, flush=True)
            if not self._is_current(fd):
                os.close(fd)
                continue   # its holder removed this file while we opened it: take the new one
            previous = self._read(fd)
            if not self.kernel_locks and previous.holder is not None and previous.alive:
                os.close(fd)
                return previous
            self.fd = fd
            try:
                self._write_record()
            except BaseException:
                self.release()
                raise
            if previous.holder is not None:   # a record without the lock: its holder is gone
                why = previous.why or "it let go of the lock without removing its record"
                print(f"[dora-bench] taking over the lock {self.path} of {previous.holder.describe()}: {why}",
                      flush=True)
            self._start_heartbeat()
            return None

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (no record of a finished holder stays behind)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if self._is_current(fd):
                self.path.unlink(missing_ok=True)   # a waiter holding the old file sees it gone and opens anew
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(fd)
        for folder in self._made or ():   # a run refused before it wrote anything leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                break   # not empty (results, checkpoints, another seed's lock): kept

    def wait(self, check: Callable[[], None] = lambda: None, poll_s: float = POLL_S) -> None:
        """Until the lock is ours; `check` runs between looks (a preemption raises there)."""
        while self.try_acquire() is not None:
            check()
            time.sleep(poll_s)
            check()

    # ----- internals ---------------------------------------------------------------------------------------
    def _read(self, fd: int) -> LockState:
        return _state(os.pread(fd, 4096, 0).decode("utf-8", "replace"), os.fstat(fd), self.stale_s)

    def _is_current(self, fd: int) -> bool:
        """The descriptor's file is still the one at the path (not removed or replaced)."""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _write_record(self) -> None:
        data = json.dumps(asdict(this_process(self.group))).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def _breakable(self, state: LockState) -> bool:
        """Only a kernel lock kept for a holder on another host that stopped its heartbeat: on this host the
        kernel frees a dead process's lock itself, so a held lock there has a live holder."""
        return self.kernel_locks and not state.alive and (state.holder is None or state.holder.host != HOST)

    def _break(self, state: LockState) -> bool:
        """Remove a stale lock file, one breaker at a time; False when another process is breaking it."""
        guard_path = self.path.with_name(f"{self.path.name}.break")
        guard = os.open(guard_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                return True
            if (now.st_dev, now.st_ino) != state.inode or now.st_mtime_ns != state.mtime_ns:
                return True   # replaced or refreshed since we looked: look again
            self.path.unlink()
            who = state.holder.describe() if state.holder else "an unknown holder"
            print(f"[dora-bench] taking over the lock {self.path} of {who}: {state.why}", flush=True)
            return True
        finally:
            os.close(guard)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        interval = min(60.0, max(self.stale_s / 10, 0.2))
        fd = self.fd

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    os.utime(fd)
                    if not self._is_current(fd):
                        self.lost = True
                        print(f"[dora-bench] warning: the lock {self.path} was taken over by another process",
                              file=sys.stderr, flush=True)
                        return
                except OSError:
                    continue   # a passing file-system hiccup; the next beat tries again

        self._heartbeat = threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._heartbeat.start()


# ----- the runner's use: one trainer per run ---------------------------------------------------------------
@contextlib.contextmanager
def one_trainer(where: RunLocation, seed: int, settings, force: bool, wait: bool, check: Callable[[], None],
                rank: int = 0, world_size: int = 1) -> Iterator[RunLock | bool | None]:
    """The run's lock while this process trains it (`settings`: the config's `lock` group). Yields None when
    another process holds it and we do not `wait` (one line names the holder either way). Processes of a
    multi-process run other than rank 0 take no lock: they go on once their rank 0 holds it (True)."""
    group = process_group() if world_size > 1 else None
    if rank != 0:
        follow_rank_zero(where, group, force, check)
        yield True
        return
    lock = RunLock(where.lock, settings.stale_minutes * 60, group)
    with writing(where.lock):
        state = lock.try_acquire()
    if state is not None:
        who = state.holder.describe() if state.holder else "another process"
        then = ("waiting for it" if wait else
                "the job's other seeds first, then its result (lock.when_held=wait)" if settings.when_held == "wait"
                else "skipped, its result is left to that process (lock.when_held=skip)")
        print(f"[dora-bench] seed {seed}: {who} trains it now (lock {where.lock}): {then}", flush=True)
        if not wait:
            yield None
            return
        with writing(where.lock):
            lock.wait(check)
    try:
        yield lock
    finally:
        lock.release()


def process_group() -> str:
    """What names one multi-process run (its rendezvous), the same in all its processes."""
    return (f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
            f"/{os.environ.get('TORCHELASTIC_RUN_ID', '')}")


def follow_rank_zero(where: RunLocation, group: str, force: bool, check: Callable[[], None]) -> None:
    """Rank > 0: go on once this run's rank 0 holds the lock, or once the result is there (rank 0 reuses it)."""
    while force or not where.existing():
        state = inspect(where.lock, math.inf)
        if state is not None and state.holder is not None and state.holder.group == group:
            return
        check()
        time.sleep(0.2)
