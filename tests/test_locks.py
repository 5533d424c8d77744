"""One trainer per result: a second process does not train a locked run (it waits or moves on, naming the
holder); a lock whose holder is gone is taken over with a line saying so; dora-bench-status tells running runs
from their lock."""
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, run_cli, write_result_file

from dora_bench import locks, results
from dora_bench.locks import HOST, RunLock

COMMON = ("task=rte", "method=lora", "budget=small", *TINY)


# ----- the lock itself ---------------------------------------------------------------------------------------
def hold_in_child(path: Path, holder: dict | None = None, mtime: float | None = None) -> subprocess.Popen:
    """Another process holding the kernel lock on `path`, with `holder` as its record and no heartbeat
    (a holder that hangs, or a dead NFS client whose lock the server keeps)."""
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, sys.argv[2].encode())\n"
            "if sys.argv[3]: os.utime(fd, (float(sys.argv[3]), float(sys.argv[3])))\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", code, str(path), json.dumps(holder) if holder else "",
                              "" if mtime is None else str(mtime)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def record(host: str, pid: int, started: float = 1.0) -> dict:
    return {"host": host, "pid": pid, "started": started, "process_start": None, "group": None}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_held_lock_is_not_taken_and_names_its_holder(tmp_path):
    path = tmp_path / "seed=1.lock"
    first, second = RunLock(path, 600), RunLock(path, 600)
    assert first.try_acquire() is None
    try:
        state = second.try_acquire()   # another open file: flock refuses it even within one process
        assert state is not None and state.alive and state.holder.pid == os.getpid() and state.holder.host == HOST
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        first.release()
    assert not path.exists()                                  # a holder that lets go leaves no record
    assert second.try_acquire() is None
    second.release()


def test_the_lock_of_a_killed_holder_on_this_host_is_taken_over_with_a_line(tmp_path, capsys):
    path = tmp_path / "seed=1.lock"
    code = ("import sys, time\nfrom dora_bench.locks import RunLock\n"
            "assert RunLock(sys.argv[1], 600).try_acquire() is None\nprint('held', flush=True)\ntime.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    lock = RunLock(path, 600)
    assert lock.try_acquire().holder.pid == child.pid         # alive: held
    child.kill()
    child.wait()
    assert lock.try_acquire() is None                          # the kernel freed it; its record stayed
    try:
        out = capsys.readouterr().out
        assert f"taking over the lock {path} of {HOST} pid {child.pid} (since " in out
        assert f"process {child.pid} is not running" in out
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_lock_kept_for_a_silent_holder_on_another_host_is_broken_after_stale_minutes(tmp_path, capsys):
    path = tmp_path / "seed=1.lock"
    child = hold_in_child(path, record("node-elsewhere", 4242), mtime=time.time() - 20 * 60)
    lock = RunLock(path, 10 * 60)
    try:
        assert lock.try_acquire() is None
        out = capsys.readouterr().out
        assert f"taking over the lock {path} of node-elsewhere pid 4242" in out
        assert "no heartbeat for 20.0 min (lock.stale_minutes=10)" in out
        assert json.loads(path.read_text())["host"] == HOST
    finally:
        lock.release()
        child.kill()


@pytest.mark.parametrize("host,age_min", [("node-elsewhere", 2), (HOST, 60)])
def test_a_live_holder_is_never_broken(tmp_path, host, age_min):
    """Another host with a recent heartbeat; or this host, whatever the heartbeat says (the kernel knows)."""
    path = tmp_path / "seed=1.lock"
    child = hold_in_child(path, mtime=time.time() - age_min * 60)
    child_record = record(host, child.pid if host == HOST else 4242)
    path.write_text(json.dumps(child_record))
    os.utime(path, (time.time() - age_min * 60,) * 2)
    try:
        state = RunLock(path, 10 * 60).try_acquire()
        assert state is not None and state.alive and state.holder.host == host
        assert path.exists() and json.loads(path.read_text()) == child_record
    finally:
        child.kill()


@pytest.mark.slow
def test_the_heartbeat_keeps_the_lock_fresh_and_a_broken_lock_is_noticed(tmp_path):
    path = tmp_path / "seed=1.lock"
    lock = RunLock(path, stale_s=2)   # beats every 0.2 s
    assert lock.try_acquire() is None
    try:
        os.utime(path, (0, 0))
        time.sleep(1)
        assert time.time() - path.stat().st_mtime < 1 and not lock.lost
        path.unlink()                                  # what a breaker does
        path.write_text("{}")
        time.sleep(1)
        assert lock.lost
    finally:
        lock.release()
    assert path.read_text() == "{}"                     # not ours any more: left alone


def test_without_flock_the_record_alone_keeps_a_second_process_away(tmp_path, monkeypatch, capsys):
    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    path = tmp_path / "seed=1.lock"
    first, second = RunLock(path, 600), RunLock(path, 600)
    assert first.try_acquire() is None
    assert "offers no file locks (flock: [Errno 38] Function not implemented)" in capsys.readouterr().err
    state = second.try_acquire()
    assert state is not None and state.holder.pid == os.getpid()
    first.release()
    assert second.try_acquire() is None
    second.release()


# ----- the runner ------------------------------------------------------------------------------------------
def location(tmp_path: Path, glue_dir: Path, seed: int = 1) -> results.RunLocation:
    cfg = results.compose_config([*COMMON, f"data.dir={glue_dir}", f"results_dir={tmp_path / 'results'}"])
    return results.locate(cfg, seed)


def holder_line(seed: int) -> str:
    return f"[dora-bench] seed {seed}: {HOST} pid {os.getpid()} (since "


def test_a_second_process_skips_a_run_another_trains_naming_the_holder(tmp_path, glue_dir, cache_dir):
    where = location(tmp_path, glue_dir)
    lock = RunLock(where.lock, 600)
    assert lock.try_acquire() is None   # this test process is the other trainer
    try:
        out = run_cli(*COMMON, "seed=1", "lock.when_held=skip", f"data.dir={glue_dir}", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        line = next(line for line in out.stdout.splitlines() if line.startswith(holder_line(1)))
        assert line.endswith(f"trains it now (lock {where.lock.relative_to(tmp_path)}): skipped, its result is left "
                             "to that process (lock.when_held=skip)")
        assert "train_runtime" not in out.stdout and not where.result.exists()
        assert json.loads(where.lock.read_text())["pid"] == os.getpid()   # still ours, untouched
    finally:
        lock.release()


def wait_for_line(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed:\n{''.join(seen)[-3000:]}")


@pytest.mark.slow
def test_a_waiting_process_trains_its_free_seeds_first_then_the_held_one_once_let_go(tmp_path, glue_dir, cache_dir):
    held = location(tmp_path, glue_dir, seed=1)
    lock = RunLock(held.lock, 600)
    assert lock.try_acquire() is None
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dora_bench", *COMMON, "seeds=[1,2]", f"data.dir={glue_dir}"],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    try:
        wait_for_line(proc, "the job's other seeds first, then its result (lock.when_held=wait)", seen)
        wait_for_line(proc, "trains it now", seen)             # seed 2 trained, now waiting on seed 1
        assert seen[-1].startswith(holder_line(1)) and seen[-1].rstrip().endswith("waiting for it")
        assert "".join(seen).count("train_runtime") == 1 and location(tmp_path, glue_dir, 2).result.exists()
        time.sleep(2)
        assert proc.poll() is None and not held.result.exists()  # still waiting, not training
    finally:
        lock.release()                                          # the holder stopped without a result
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert out.count("train_runtime") == 2                      # each seed trained once, here
    assert results.read_result(held.result).complete


@pytest.mark.slow
def test_a_waiting_process_uses_the_result_its_holder_wrote(tmp_path, glue_dir, cache_dir):
    where = location(tmp_path, glue_dir)
    lock = RunLock(where.lock, 600)
    assert lock.try_acquire() is None
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dora_bench", *COMMON, "seed=1", f"data.dir={glue_dir}"],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    try:
        wait_for_line(proc, "waiting for it", seen)
        written = write_result_file(tmp_path / "results", "rte", "lora", "small", seed=1, model="tiny_roberta",
                                    score=55.5, overrides=(f"data.dir={glue_dir}", "trainer.epochs=2",
                                                           "trainer.batch_size=8"))
        assert written == where.result
    finally:
        lock.release()
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "complete result written by the process we waited for" in out
    assert "train_runtime" not in out and "accuracy 55.50 ± 0.00 over 1 seed(s) [1]" in out


def status(tmp_path: Path, glue_dir: Path) -> str:
    out = run_cli(*COMMON, "seed=1", f"data.dir={glue_dir}", cwd=tmp_path, script="dora_bench.status")
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_status_shows_a_run_as_running_from_its_lock_and_a_gone_holder_is_taken_over(tmp_path, glue_dir, cache_dir):
    where = location(tmp_path, glue_dir)
    lock = RunLock(where.lock, 600)
    assert lock.try_acquire() is None
    try:
        line = status(tmp_path, glue_dir).splitlines()[0]
        assert line.startswith("running ") and f"held by {HOST} pid {os.getpid()} (since " in line
    finally:
        lock.release()
    assert not (tmp_path / "results").exists()   # a lock let go leaves neither its file nor folders it made
    pid = dead_pid()   # a holder killed on this host leaves its record behind
    where.lock.parent.mkdir(parents=True)
    where.lock.write_text(json.dumps(record(HOST, pid)))
    line = status(tmp_path, glue_dir).splitlines()[0]
    assert line.startswith("missing ")
    assert f"lock left by {HOST} pid {pid} (since " in line and f"gone (process {pid} is not running)" in line

    out = run_cli(*COMMON, "seed=1", f"data.dir={glue_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"taking over the lock {where.lock.relative_to(tmp_path)} of {HOST} pid {pid} (since " in out.stdout
    assert out.stdout.count("train_runtime") == 1 and not where.lock.exists()
    assert status(tmp_path, glue_dir).splitlines()[0].startswith("done ")
