"""Atomic directory writes: nothing that looks like a finished checkpoint unless it is one.

Everything is written into `<final>.tmp-<pid>`, files are fsync'ed, then the directory is
renamed onto `<final>` in one `os.replace`. A crash (even SIGKILL) at any moment leaves either
the previous complete directory or a `.tmp-*` directory that no loader ever reads.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(final_dir: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `final_dir` atomically."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(f"{final_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final_dir.exists():
            # Keep the old copy until the new one is in place: rename old aside, new in, drop old.
            old = final_dir.with_name(f"{final_dir.name}.old-{os.getpid()}")
            os.replace(final_dir, old)
            os.replace(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
