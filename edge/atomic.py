"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

The one writer the project uses for files that something else reads while they change: the
daemon storing a pushed model and its signature, ``sigmoid-train fit`` writing its outputs,
``sigmoid-train export`` saving a model, ``collect`` and ``label`` storing captures and
labels (:mod:`trainer.captures`). Each file is written to a temporary name in its
target directory (same file system, so the rename is atomic), flushed and fsynced, and then
renamed into place; on any error the temporary files are removed and the old files stay.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_files(directory: str | Path, payloads: dict[str, bytes], *,
                mode: int | None = None) -> dict[str, Path]:
    """Write ``{file name: bytes}`` into ``directory``: all to temporary names, then renamed.

    Every file is staged before the first rename, so a failure while writing (disk full)
    changes nothing; the renames then happen in the order of ``payloads``.

    Parameters
    ----------
    directory : str or Path
        Created (with parents) when missing.
    payloads : dict
        File name (no directory part) -> content.
    mode : int, optional
        Permission bits of the new files (``mkstemp`` creates them 0600).

    Returns
    -------
    dict
        File name -> the path written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    try:
        for name, data in payloads.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            staged[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
        paths = {}
        for name, tmp in staged.items():
            os.replace(tmp, out / name)
            paths[name] = out / name
        return paths
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)


def write_file(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_files`); return the path."""
    path = Path(path)
    return write_files(path.parent, {path.name: data}, mode=mode)[path.name]
