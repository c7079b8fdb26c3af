"""Writing files so that a failure, Ctrl-C or a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import glob
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gguflm.errors import GGUFLMError


def temp_path(path: Path) -> Path:
    """The hidden name a file is written under before it is complete: `.NAME.PID.part` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def remove_stale_parts(path: Path) -> list[Path]:
    """Remove the temporary files of earlier writes to `path` whose process is gone (killed before it
    could clean up); a part of a write still running is left alone. Returns what was removed."""
    removed = []
    for part in Path(path).expanduser().parent.glob(f".{glob.escape(Path(path).name)}.*.part"):
        pid = part.name[len(Path(path).name) + 2 : -len(".part")]
        if pid.isdigit() and not _running(int(pid)):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier part: no write of ours is in progress on this path
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextmanager
def atomic_write(path: str | os.PathLike, what: str = "the file") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is fsynced and renamed to `path`.

    Any exception (Ctrl-C included) removes the temporary file and leaves `path` as it was; an
    OSError becomes one GGUFLMError naming `what` and the path.
    """
    path = Path(path).expanduser()
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise GGUFLMError(f"cannot write {what} to {str(path)!r}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "the file") -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_write`."""
    with atomic_write(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path).expanduser()
