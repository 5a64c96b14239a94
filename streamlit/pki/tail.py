"""Reading what was appended to a log since the last read, across rotations.

The CA's issuance journal and the audit trail are read incrementally: only the lines written since
the last read, from a remembered position. A position is only good for the file it was taken on, so
it also keeps that file's inode and its first bytes:
- a new inode (rotation by rename): the rest of the old file, if it is still next to the new one,
  then the new file from its start;
- a file shorter than the position, or whose first bytes changed (truncated in place, or copied and
  truncated, then written again): the file from its start.
Re-reading a line is harmless to both readers; missing one is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_HEAD = 256  # a whole first line of the audit trail: two lines written in one second differ only late
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Position:
    inode: int = 0
    offset: int = 0
    head: bytes = b""
    """The file's first bytes (up to 256) when the position was taken."""


def read_appended(path: Path, position: Position, on_line: Callable[[bytes], object]) -> Position:
    """Call `on_line` with each complete line appended to `path` since `position`; return the position
    after them. A line still being written waits for the next read. Raises OSError when `path` cannot
    be read."""
    stat = path.stat()
    if stat.st_ino == position.inode and stat.st_size == position.offset:
        return position  # nothing new: not even opened
    offset = position.offset
    if position.inode and position.inode != stat.st_ino:
        old = _file_with_inode(path.parent, position.inode)
        if old is not None:
            _lines_from(old, offset, old.stat().st_size, on_line, final=True)
        offset = 0
    head = _head(path)
    if offset > stat.st_size or not head.startswith(position.head[: len(head)]):
        offset = 0
    return Position(stat.st_ino, _lines_from(path, offset, stat.st_size, on_line, final=False), head)


def _head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(_HEAD)


def _file_with_inode(folder: Path, inode: int) -> Path | None:
    with os.scandir(folder) as entries:
        return next((Path(e.path) for e in entries if e.inode() == inode and e.is_file()), None)


def _lines_from(path: Path, offset: int, size: int, on_line: Callable[[bytes], object], *, final: bool) -> int:
    """Each line of `path` from `offset` up to `size` (what the file held when looked at: never more,
    whatever keeps writing to it) to `on_line`; returns the offset after the last whole one (with
    `final`, the file grows no more: a last line without its newline counts too)."""
    pending = b""
    with path.open("rb") as file:
        file.seek(offset)
        while offset < size and (chunk := file.read(min(_CHUNK, size - offset))):
            parts = (pending + chunk).split(b"\n")
            pending = parts.pop()
            for line in parts:
                on_line(line)
            offset += len(chunk)
    if final and pending:
        on_line(pending)
        pending = b""
    return offset - len(pending)
