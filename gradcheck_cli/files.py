"""Files from strangers and files we write: read regular files only, up to a size; write reports whole or
not at all, and never over something that is not a regular file."""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Iterable

from .errors import InputError

DEFAULT_MAX_FILE_BYTES = 10_000_000  # 10 MB: far more than any hand-written batch file


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file (symlinks resolved first), refusing anything else or anything larger.

    A FIFO or a device is refused before it is opened, so /dev/zero, /dev/urandom or a FIFO with no
    writer never hangs the reader or fills its memory.

    Raises:
        InputError: not a regular file, too large, or unreadable.
    """
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"is {_kind(info.st_mode)}{' (through a symbolic link)' if real != os.path.abspath(path) else ''}, "
                             "not a regular file; batch reads regular files only")
        if info.st_size > max_bytes:
            raise InputError(f"is {info.st_size:,} bytes, more than --max-file-bytes {max_bytes:,}")
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, opening it still returns at once
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InputError("is not a regular file; batch reads regular files only")
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise InputError(f"is more than --max-file-bytes {max_bytes:,} bytes")
    return data


def check_target(path: str, protect: Iterable[str] = ()) -> None:
    """Refuse a report target that exists and is not a regular file we may replace.

    Refused: symbolic links, devices, FIFOs, folders, read-only files, and any of `protect` (the files
    being read) under whatever name.

    Raises:
        InputError: the target must not be written.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"cannot write {path}: it exists and is {_kind(info.st_mode)}; "
                         "reports are written to regular files only")
    if not info.st_mode & 0o222:
        raise InputError(f"cannot write {path}: it is read-only")
    for other in protect:
        try:
            same = os.path.samestat(info, os.stat(other))
        except OSError:
            continue
        if same:
            raise InputError(f"cannot write {path}: it is {other}, one of the files being read")


def write_atomic(path: str, text: str | bytes, protect: Iterable[str] = ()) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a file.

    Raises:
        InputError: the target is refused (see check_target) or cannot be written.
    """
    check_target(path, protect)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gradcheck-", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary file would be created, not mkstemp's 0600
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w",
                       **({} if binary else {"encoding": "utf-8", "errors": "surrogateescape"})) as handle:
            handle.write(text)
        check_target(path, protect)  # again: the target may have been swapped while we wrote
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
