"""Writes that can fail for want of space or permission: one error naming the file, exit code 74.

A full disk, an exhausted quota, a read-only or unwritable folder is not a failed seed (a failed record could
not be written either, and the next run with space must simply go on): the run stops at once with one line,
`cannot write <path>: [Errno 28] No space left on device`, and keeps what was complete before it (the last
complete checkpoint, earlier results). Writers give the path; `writing(path)` turns their errors into this.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

EXIT_STORAGE = 74   # sysexits.h EX_IOERR


class StorageError(Exception):
    """A file or folder could not be written; `path` names it, `err` is the error the writer raised."""

    def __init__(self, path, err: BaseException):
        self.path, self.err = str(path), err
        super().__init__(f"cannot write {self.path}: {reason(err)}")


def reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}"
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def write_failure(err: BaseException) -> bool:
    """An error a writer raises when the file system refuses: OSError (ENOSPC, EDQUOT, EACCES, EROFS, EIO, ...),
    torch.save's zip writer (RuntimeError '... failed writing file ...') and safetensors' (an IoError inside)."""
    if isinstance(err, OSError):
        return True
    text = str(err)
    return (isinstance(err, RuntimeError) and "PytorchStreamWriter" in text
            or type(err).__name__ == "SafetensorError" and "IoError" in text)


@contextlib.contextmanager
def writing(path: Path | str, remove_on_failure: bool = False) -> Iterator[None]:
    """Write `path` (a file, or a folder with `remove_on_failure`: the partial folder goes, freeing its space)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        if not write_failure(err):
            raise
        if remove_on_failure:
            shutil.rmtree(path, ignore_errors=True)
        raise StorageError(path, err) from err
