"""Writes that can fail for want of space or permission: one error naming the file, exit code 74.

A full disk, an exhausted quota, a read-only or unwritable folder is not a failed seed (a failed record could
not be written either, and the next run with space must simply go on): the run stops at once with one line,
`cannot write <path>: [Errno 28] No space left on device`, and keeps what was complete before it (the last
complete checkpoint, earlier results). Writers give the path; `writing(path)` turns their errors into this.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

EXIT_STORAGE = 74   # sysexits.h EX_IOERR


ALMOST_FULL = 2**20   # bytes left: a writer's vague error on such a file system is a full disk


class StorageError(Exception):
    """A file or folder could not be written; `path` names it, `err` is the error the writer raised."""

    def __init__(self, path, err: BaseException):
        self.path, self.err = str(path), err
        super().__init__(f"cannot write {self.path}: {reason(err, Path(path))}")


def reason(err: BaseException, path: Path) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}"
    text = str(err).strip()
    said = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    if free_bytes(path) < ALMOST_FULL:   # torch.save says only "unexpected pos 576 vs 534" when the disk is full
        return f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)} ({said})"
    return said


def free_bytes(path: Path) -> float:
    """Space left to this user on the file system of `path` (its nearest existing folder); inf if unknown."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return float("inf")
    return stat.f_bavail * stat.f_frsize


TORCH_WRITER_ERRORS = ("inline_container.cc", "PytorchStreamWriter", "iostream error", "cannot be opened")


def write_failure(err: BaseException, path: Path) -> bool:
    """An error a writer raises when the file system refuses: OSError (ENOSPC, EDQUOT, EACCES, EROFS, EIO, ...),
    torch.save's zip writer (RuntimeErrors that rarely say why: "unexpected pos 576 vs 534", "basic_ios::clear:
    iostream error"), safetensors' (SafetensorError with the I/O error inside), or any error on a full disk."""
    if isinstance(err, OSError):
        return True
    text, safetensors = str(err), type(err).__name__ == "SafetensorError"
    if not (isinstance(err, RuntimeError) or safetensors):
        return False   # not what a writer raises (a preemption, a bug): never reported as a storage error
    return (any(sign in text for sign in TORCH_WRITER_ERRORS) or safetensors and ("I/O error" in text or "IoError" in text)
            or free_bytes(path) < ALMOST_FULL)


@contextlib.contextmanager
def writing(path: Path | str, remove_on_failure: bool = False) -> Iterator[None]:
    """Write `path` (a file, or a folder with `remove_on_failure`: the partial folder goes, freeing its space)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        if not write_failure(err, Path(path)):
            raise
        if remove_on_failure:
            shutil.rmtree(path, ignore_errors=True)
        raise StorageError(path, err) from err
