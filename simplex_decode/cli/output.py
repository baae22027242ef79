"""What the commands write: PNG files (atomically, with the usual permissions), progress bars
(only on a terminal), wrapped text."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from .spec import CLIError

__all__ = ["check_out", "write_png", "progress", "terminal_width", "wrap"]


def check_out(out, *, option: str = "--out") -> Path:
    """The output path, or a CLIError saying why it cannot be written (before any work)."""
    path = Path(out)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"{option}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"{option}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise CLIError(f"{option}: {str(path)!r} is a directory; give a file name such as plot.png")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_png(fig, path) -> None:
    """Save a matplotlib figure as PNG at ``path``: written to a temporary file in the same
    directory, then renamed, so an error never leaves half a file; the file gets the mode
    a new file gets (``0666`` less the umask, e.g. ``0644``), not ``mkstemp``'s ``0600``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress(total: int, desc: str, *, unit: str = "step"):
    """A tqdm bar on stderr when stderr is a terminal; otherwise a silent stand-in."""
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm ships with the model extra
            pass
    return _Silent()


class _Silent(contextlib.nullcontext):
    def update(self, n=1):
        pass

    def set_description(self, desc):
        pass

    def close(self):
        pass


def terminal_width(default: int = 100) -> int:
    """The width to wrap text to: the terminal's, or ``default`` when not a terminal."""
    if sys.stdout.isatty():
        return max(60, shutil.get_terminal_size((default, 24)).columns)
    return default


def wrap(text: str, width: int, indent: str = "", subsequent: str | None = None) -> list[str]:
    """``text`` wrapped to ``width`` columns (never cut), first line prefixed by ``indent``."""
    sub = indent if subsequent is None else subsequent
    lines = textwrap.wrap(" ".join(text.split()), width=width, initial_indent=indent, subsequent_indent=sub,
                          break_long_words=False, break_on_hyphens=False)
    return lines or [indent.rstrip()]
