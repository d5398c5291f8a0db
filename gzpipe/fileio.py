"""Small file utilities: atomic writes (never a half-written file under its final name) and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from gzpipe.errors import GzpipeError

_TMP_PID = re.compile(r"\.tmp-(\d+)")


def local_path(path: str | Path) -> str:
    """``path`` as an absolute path string, for readers that take a leading ``name:`` as a URI scheme (pyarrow,
    fsspec): a run folder such as ``timm:resnet18`` relative to the working directory (`--out .`) would otherwise
    fail with "Unrecognized filesystem type in URI"."""
    return str(Path(path).absolute())


def tmp_path_for(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", durable: bool = True) -> Iterator[Any]:
    """Open ``path`` for writing through a temporary file; rename into place only on success.

    The rename is atomic on POSIX, so a reader (or a re-run after SIGKILL) sees either the old file or the whole
    new one. The data are fsync'ed before the rename so a power cut cannot leave an empty file behind either;
    ``durable=False`` skips that fsync, for writers that verify their files on reuse and sync once at the end
    (``sync_folder``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file name (with the same suffix, for writers that pick a format by it, like XGBoost's
    ``save_model``) that is fsync'ed and renamed to ``path`` on success and removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def umask_mode(path: str | Path) -> None:
    """Give a file the mode the user's umask gives any new file (0644 under the usual 022): for files another
    library wrote with a stricter one (safetensors' writer uses 0600, so colleagues could not read a shared model)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, stable key order and indentation (so files diff cleanly)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def sync_folder(folder: str | Path) -> None:
    """Flush everything written to the file system holding ``folder`` to disk: one ``syncfs`` (Linux) for many
    files written with ``durable=False``, instead of one fsync each; ``os.sync`` elsewhere."""
    import ctypes

    fd = os.open(folder, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "syncfs") or libc.syncfs(fd) != 0:
            os.sync()
    except OSError:
        os.sync()
    finally:
        os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie (killed, not yet reaped: common in containers whose init does
    not reap orphans) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_tmp(folder: str | Path, recursive: bool = False) -> int:
    """Delete temporary files left by a killed run (``.NAME.tmp-PID`` whose process is gone); returns how many.
    Temporary files of a live process (another rank, a concurrent stage) are left alone."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in (folder.rglob if recursive else folder.glob)(".*.tmp-*"):
            m = _TMP_PID.search(p.name)
            if m and int(m.group(1)) != os.getpid() and _alive(int(m.group(1))):
                continue
            p.unlink(missing_ok=True)
            n += 1
    return n


# --- replacing a whole folder ---------------------------------------------------------------------------------
# A finished run is replaced by building the new one beside it, under ``staging_dir(final)``, and swapping it in when
# it is complete: the old folder is renamed aside, the new one renamed into place, the old one removed. A crash
# between the two renames leaves the aside folder, which ``finish_swap`` resolves on the next start (only a complete
# staging folder is ever swapped, so one found there goes in).

def staging_dir(final: str | Path) -> Path:
    """Where the replacement of the folder ``final`` is built: a hidden sibling (same parent, so paths recorded
    relative to the parent stay valid after the swap)."""
    final = Path(final)
    return final.with_name(f".{final.name}.replacing")


def _aside_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.replaced")


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finish_swap(final: str | Path) -> None:
    """Complete a swap that a crash interrupted (``final`` missing, its old version aside), or drop the old
    version a crash left aside after the swap."""
    import shutil

    final = Path(final)
    aside = _aside_dir(final)
    if not aside.exists():
        return
    if not final.exists():
        staged = staging_dir(final)
        os.rename(staged if staged.is_dir() else aside, final)
    shutil.rmtree(aside, ignore_errors=True)


def swap_in(staged: str | Path, final: str | Path) -> None:
    """Put the complete folder ``staged`` where ``final`` is (or is not yet); the old ``final`` is removed after."""
    import shutil

    staged, final = Path(staged), Path(final)
    aside = _aside_dir(final)
    if aside.exists():
        shutil.rmtree(aside)
    had_old = final.exists()
    if had_old:
        os.rename(final, aside)
    os.rename(staged, final)
    _sync_dir(final.parent)
    if had_old:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def rebuilt(final: str | Path) -> Iterator[Path]:
    """A fresh staging folder for a new version of ``final`` (for stages that never resume: leftovers of an earlier
    attempt are removed first); swapped in when the block completes, removed on any exception or stop, so the old
    ``final`` stays exactly as it was."""
    import shutil

    staged = staging_dir(final)
    shutil.rmtree(staged, ignore_errors=True)
    try:
        yield staged
        swap_in(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def remove_folder_if_empty(folder: str | Path) -> None:
    """Remove ``folder`` when it holds nothing (a stage that failed before writing leaves no empty folder)."""
    try:
        Path(folder).rmdir()
    except OSError:
        pass


def check_out_folder(out: str | Path, option: str = "--out", what: str = "the artifacts folder") -> None:
    """Every stage's output folder option: a folder or nothing yet, never a file (one line, exit 2)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise GzpipeError(f"{option} {p} is a file; give a folder ({what})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise GzpipeError(f"{option} {p}: {parent} is a file, not a folder")
            break
