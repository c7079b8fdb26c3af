"""Writing files so that a failure or Ctrl-C never leaves a half-written file under the final name."""

from __future__ import annotations

import os
from pathlib import Path

from gguflm.errors import GGUFLMError


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "the file") -> Path:
    """Write `text` to a temporary name beside `path`, then rename it into place."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise GGUFLMError(f"cannot write {what} to {str(path)!r}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
