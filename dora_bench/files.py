"""Atomic file writes: readers (a sweep's other jobs, the tables, a status check) never see half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dora_bench.storage import writing


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file. A full disk or
    an unwritable folder raises StorageError naming `path`, and leaves neither the file nor the temp file."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
