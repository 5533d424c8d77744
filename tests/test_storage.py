"""Full disks and unwritable folders: a failed write of a checkpoint, a prediction file or the result stops the
run with one line naming the file and the error (exit code 74), leaves no partial or empty result, keeps the
last complete checkpoint, and the next run (with space) finishes."""
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli, write_squad
from hydra import compose, initialize_config_module

from dora_bench.engine import COMPLETE_MARK
from dora_bench.results import locate, read_result
from dora_bench.run import run_seed
from dora_bench.storage import EXIT_STORAGE, StorageError

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def config(root: Path, *overrides: str):
    with initialize_config_module("dora_bench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_roberta", "seed=1", f"results_dir={root}",
                                            "trainer.epochs=2", "trainer.batch_size=8", "trainer.progress_bar=false",
                                            *overrides])


def files_named(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.rglob(pattern)) if folder.exists() else []


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_the_next_run_resumes(
        tmp_path, glue_dir, cache_dir, monkeypatch):
    cfg = config(tmp_path, "task=rte", "method=lora", f"data.dir={glue_dir}")
    where = locate(cfg, 1)
    save = torch.save

    def full_at_the_second_checkpoint(obj, f, *args, **kwargs):   # rte: 3 steps an epoch, checkpoints 3 and 6
        if str(f).endswith(os.path.join("checkpoint-6", "optimizer.pt")):
            raise ENOSPC
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_the_second_checkpoint)
    with pytest.raises(StorageError) as failed:
        run_seed(cfg, 1)
    assert str(failed.value) == f"cannot write {where.checkpoints / 'checkpoint-6'}: [Errno 28] No space left on device"
    assert not where.result.exists() and not files_named(where.result.parent, "*.tmp")
    assert [p.name for p in where.checkpoints.iterdir()] == ["checkpoint-3"]        # the partial one is gone
    assert (where.checkpoints / "checkpoint-3" / COMPLETE_MARK).is_file()
    assert not where.lock.exists()

    monkeypatch.undo()
    result = run_seed(cfg, 1)
    assert result.complete and result.train.resumed_from.endswith("checkpoint-3")
    assert read_result(where.result).complete


def test_a_full_disk_while_writing_the_result_leaves_no_file_and_the_next_run_finishes(
        tmp_path, glue_dir, cache_dir, monkeypatch):
    cfg = config(tmp_path, "task=rte", "method=lora", f"data.dir={glue_dir}")
    where = locate(cfg, 1)
    fsync = os.fsync

    def full_for_the_result(fd):
        if f".{where.result.name}." in os.readlink(f"/proc/self/fd/{fd}"):   # the result's temp file
            raise ENOSPC
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_the_result)
    with pytest.raises(StorageError, match=rf"^cannot write {where.result}: \[Errno 28\] No space left on device$"):
        run_seed(cfg, 1)
    assert not where.result.exists() and not files_named(where.result.parent, f".{where.result.name}.*")
    [checkpoint] = where.checkpoints.iterdir()                 # kept: deleted only once the result is safe
    assert checkpoint.name == "checkpoint-6" and (checkpoint / COMPLETE_MARK).is_file()

    monkeypatch.undo()
    result = run_seed(cfg, 1)
    assert result.complete and result.train.resumed_from.endswith("checkpoint-6") and len(result.epochs) == 2
    assert read_result(where.result).complete and not where.checkpoints.exists()


@pytest.mark.slow
def test_an_unwritable_predictions_folder_stops_the_run_and_the_next_run_finishes(tmp_path, cache_dir, monkeypatch):
    data = write_squad(tmp_path / "squad", version_2=False)
    cfg = config(tmp_path / "results", "task=squad_v1", "method=bitfit", f"data.dir={data}", "trainer.max_length=64",
                 "++task.doc_stride=16")
    where = locate(cfg, 1)
    replace = os.replace

    def refused(src, dst, *args, **kwargs):
        if Path(dst).parent == where.predictions:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(StorageError) as failed:
        run_seed(cfg, 1)
    assert str(failed.value) == f"cannot write {where.predictions / 'validation.json'}: [Errno 13] Permission denied"
    assert not files_named(where.result.parent, "seed=1.json") and not files_named(where.predictions, "*")

    monkeypatch.undo()
    assert run_seed(cfg, 1).complete
    assert (where.predictions / "validation.json").is_file() and read_result(where.result).complete


@pytest.mark.slow
def test_the_command_names_the_file_and_the_error_in_one_line_and_exits_74(tmp_path, glue_dir, cache_dir, monkeypatch):
    """A disk that fills up just as the result is written (this test fails the writer's fsync of the result)."""
    fsync = os.fsync

    def full_for_results(fd):
        if "seed=1.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_results)
    out = run_cli("task=rte", "method=bitfit", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=tmp_path)
    assert out.returncode == EXIT_STORAGE, out.stderr[-3000:]
    [result] = files_named(tmp_path / "results/checkpoints", "seed=1")
    written = Path("results/runs") / result.relative_to(tmp_path / "results/checkpoints")
    expected = (f"dora-bench: error: cannot write {written}.json: [Errno 28] No space left on device (complete "
                "checkpoints and results are kept; run again once it can be written)")
    assert out.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in out.stderr and not files_named(tmp_path / "results/runs", "*.json*")


@pytest.fixture
def tmpfs(tmp_path):
    """A small real file system of its own (tmpfs), resized with `resize(bytes)`; needs CAP_SYS_ADMIN (root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(reason=f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {out.stderr.strip()}")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield mount, resize
    subprocess.run(["umount", "-l", str(mount)], check=False)


def used_pages(folder: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_really_full_disk_exits_74_keeping_a_complete_checkpoint_and_then_finishes_with_space(
        tmp_path, glue_dir, cache_dir, tmpfs):
    mount, resize = tmpfs
    args = ["task=rte", "method=lora", "seed=1", f"data.dir={glue_dir}", *TINY, "keep_checkpoints=true"]
    reference = tmp_path / "reference"
    reference.mkdir()
    done = run_cli(*args, cwd=reference)
    assert done.returncode == 0, done.stderr[-2000:]
    [checkpoint] = files_named(reference / "results/checkpoints", "checkpoint-*")
    pages = used_pages(checkpoint)
    resize((pages + pages // 2) * 4096)   # room for one checkpoint, not for two nor for one and the result

    full = run_cli(*args, f"results_dir={mount}", cwd=tmp_path, process=True)     # exit 74 through a real process
    assert full.returncode == EXIT_STORAGE, full.stderr[-3000:]
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith(f"dora-bench: error: cannot write {mount}/") and "No space left on device" in line, line
    assert line.endswith("(complete checkpoints and results are kept; run again once it can be written)")
    assert not files_named(mount / "runs", "seed=1.json") and not files_named(mount / "runs", "*.tmp")
    [checkpoints] = files_named(mount / "checkpoints", "seed=1")
    [kept] = list(checkpoints.iterdir())                     # one checkpoint, complete; a partial one is removed
    assert (kept / COMPLETE_MARK).is_file()

    resize(16 * 2**20)
    again = run_cli(*args, f"results_dir={mount}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {kept}" in again.stdout
    [ours], [theirs] = files_named(mount / "runs", "seed=1.json"), files_named(reference / "results/runs", "seed=1.json")
    a, b = read_result(ours), read_result(theirs)
    assert a.complete and [e.metrics for e in a.epochs] == [e.metrics for e in b.epochs]
    shutil.rmtree(mount / "checkpoints")


def test_a_cut_off_result_file_is_listed_by_the_tables_and_trained_again(tmp_path, glue_dir, cache_dir):
    """What a full disk left behind before writes were atomic: the tables name it, the next run replaces it."""
    from helpers import run_cli

    from dora_bench import tables

    cfg = config(tmp_path / "results", "task=rte", "method=bitfit", f"data.dir={glue_dir}")
    where = locate(cfg, 1)
    where.result.parent.mkdir(parents=True)
    where.result.write_text('{"schema": 2, "status": "compl')
    assert tables.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "tables")]) == 0
    assert f"- {where.result}: " in (tmp_path / "tables/table2.md").read_text()
    out = run_cli("task=rte", "method=bitfit", "seed=1", f"data.dir={glue_dir}", *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("train_runtime") == 1 and read_result(where.result).complete
