"""Publishing a folder atomically: a reader (or a crash) sees the old complete folder or the new one, never a mix.

Everything is written into a hidden sibling, then swapped in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`
system call, so at every instant `final` names a complete folder. Where that call is missing (other systems, some
file systems) the old folder is first renamed aside, then the new one renamed in; a crash between those two renames
leaves the old folder under its aside name, which the next `publishing(final)` or `recover_folder(final)` puts back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _staging(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.renameat2  # noqa: B018 - glibc ≥ 2.28 has it; older ones (and musl, macOS) do not
        return lib
    except (OSError, AttributeError, TypeError):
        return None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot (the caller falls back)."""
    lib = _libc()
    if lib is None:
        return False
    rc = lib.renameat2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0  # EINVAL/ENOSYS (file system or kernel without it): fall back


def recover_folder(final: str | Path) -> None:
    """Put back a folder left aside by a crash in the middle of a non-atomic swap."""
    final = Path(final)
    aside = _aside(final)
    if aside.exists():
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)  # the swap completed; only the clean-up was lost
        else:
            os.rename(aside, final)


def _remove_stale_staging(final: Path) -> None:
    """Staging folders of writers that died (a crash before the swap); a live writer's folder is left alone."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier, failed attempt in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(staged: str | Path, final: str | Path) -> Path:
    """Replace `final` by the complete folder `staged` (same file system), crash-safely; returns `final`."""
    staged, final = Path(staged), Path(final)
    recover_folder(final)
    if not final.exists():
        os.rename(staged, final)
        return final
    if exchange(staged, final):
        shutil.rmtree(staged, ignore_errors=True)  # it now holds the old folder
        return final
    aside = _aside(final)
    os.rename(final, aside)
    os.rename(staged, final)
    shutil.rmtree(aside, ignore_errors=True)
    return final


@contextmanager
def publishing(final: str | Path) -> Iterator[Path]:
    """`with publishing(out) as tmp:` write the folder's content into `tmp`; on success it replaces `out`.

    An exception leaves `out` untouched and removes `tmp`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(final)
    _remove_stale_staging(final)
    tmp = _staging(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, final)
