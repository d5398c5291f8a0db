"""`gzpipe download`: the three GZ2 release files, resumable and verified, and a safe unzip of the images.

Each file downloads to ``<name>.part`` and is renamed to its final name only when complete (and its checksum,
where one is known, matches), so a final name always means a whole file. A re-run resumes a ``.part`` with an
HTTP Range request (or starts over when the server ignores Range) and skips files already complete. Network
failures end with one clear line and leave the ``.part`` to resume from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gzpipe.errors import GzpipeError
from gzpipe.fileio import tmp_path_for
from gzpipe.progress import progress_bar
from gzpipe.stopping import STOP


@dataclass(frozen=True)
class ReleaseFile:
    key: str
    name: str
    url: str
    md5: str | None  # official checksum where one is published
    approx_bytes: int  # for the disk-space check before the size is known


RELEASE = {
    "labels": ReleaseFile("labels", "gz2_hart16.csv.gz", "https://gz2hart.s3.amazonaws.com/gz2_hart16.csv.gz", None,
                          60 * 2**20),
    "mapping": ReleaseFile("mapping", "gz2_filename_mapping.csv",
                           "https://zenodo.org/records/3565489/files/gz2_filename_mapping.csv", None, 12 * 2**20),
    # MD5 as reported for Zenodo record 3565489 (docs/GZ2.md); unpacking needs about the same space again.
    "images": ReleaseFile("images", "images_gz2.zip", "https://zenodo.org/records/3565489/files/images_gz2.zip?download=1",
                          "bc647032d31e50c798770cf4430525c7", 3_400_000_000),
}
CHUNK = 1 << 20
UNPACKED_MARK = ".unpacked"


def read_checksums(path: Path) -> dict[str, str]:
    """Lines ``<md5>  <file name>`` (as md5sum writes them)."""
    out = {}
    try:
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                parts = line.split()
                if len(parts) != 2 or len(parts[0]) != 32:
                    raise GzpipeError(f"{path}: expected lines '<md5>  <file name>', got {line!r}")
                out[parts[1].lstrip("*")] = parts[0].lower()
    except FileNotFoundError:
        raise GzpipeError(f"--checksums file not found: {path}") from None
    return out


@dataclass
class DownloadConfig:
    dest: str = "data/gz2"
    what: tuple[str, ...] = ("labels", "mapping", "images")
    base_url: str | None = None
    checksums: str | None = None
    timeout: float = 60.0
    unpack: bool = True


def run_download(cfg: DownloadConfig) -> dict:
    dest, what, base_url, timeout = Path(cfg.dest), list(cfg.what), cfg.base_url, cfg.timeout
    checksums = Path(cfg.checksums) if cfg.checksums else None
    if dest.exists() and not dest.is_dir():
        raise GzpipeError(f"--dest {dest} is a file; give a folder for the release")
    dest.mkdir(parents=True, exist_ok=True)
    unknown = [w for w in what if w not in RELEASE]
    if unknown:
        raise GzpipeError(f"unknown --what {', '.join(unknown)}; choose from {', '.join(RELEASE)}")
    sums = read_checksums(checksums) if checksums else {}
    report = {}
    for key in what:
        f = RELEASE[key]
        url = f"{base_url.rstrip('/')}/{f.name}" if base_url else f.url
        md5 = sums.get(f.name, f.md5)  # --checksums wins; a mirror of the official files has the official MD5
        path = fetch(url, dest / f.name, md5, timeout, f.approx_bytes)
        report[key] = str(path)
    if "images" in what and cfg.unpack:
        report["unpacked"] = unpack_images(dest / RELEASE["images"].name, dest / "images")
    return report


def _md5_of(path: Path) -> "hashlib._Hash":
    h = hashlib.md5()  # noqa: S324 - integrity check against the published MD5, not security
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h


def fetch(url: str, final: Path, md5: str | None, timeout: float = 60.0, approx_bytes: int = 0) -> Path:
    """Download ``url`` to ``final`` via ``final.part``, resuming; verify ``md5`` when given."""
    if final.exists():
        print(f"{final.name}: already complete, skipped", flush=True)
        return final
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "gzpipe", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) URLs of the release or a mirror
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds everything
            return _finish(part, final, md5)
        raise GzpipeError(f"download of {final.name} failed: HTTP {e.code} {e.reason} from {url}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise GzpipeError(f"download of {final.name} failed: cannot reach {url} ({reason}); check the network or "
                          "--base-url and re-run") from None
    with resp:
        status = getattr(resp, "status", 200)
        length = int(resp.headers.get("Content-Length", "0") or 0)
        if have and status == 206:
            total = have + length
            mode = "ab"
        else:
            if have:
                print(f"{final.name}: the server ignored the Range request; starting over", flush=True)
            have, total, mode = 0, length, "wb"
        need = (total - have) if total else approx_bytes
        free = shutil.disk_usage(final.parent).free
        if need and free < need:
            raise GzpipeError(f"not enough disk space for {final.name}: {need / 1e9:.2f} GB needed, {free / 1e9:.2f} GB "
                              f"free in {final.parent}")
        got = have
        try:
            with open(part, mode) as out, progress_bar(final.name, total=total or None, unit="B") as bar:
                bar.advance(have)
                while True:
                    STOP.check()  # the .part keeps what arrived; the next run resumes from it
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    bar.advance(len(block))
                out.flush()
                os.fsync(out.fileno())
        except (socket.timeout, ConnectionError, OSError) as e:
            raise GzpipeError(f"download of {final.name} interrupted at {got:,} bytes ({type(e).__name__}); re-run the "
                              f"same command to resume from {part.name}") from None
        if total and got < total:
            raise GzpipeError(f"download of {final.name} stopped at {got:,} of {total:,} bytes (the connection closed "
                              f"early); re-run the same command to resume from {part.name}")
    return _finish(part, final, md5)


def _finish(part: Path, final: Path, md5: str | None) -> Path:
    if md5:
        got = _md5_of(part).hexdigest()
        if got != md5.lower():
            bad = part.with_name(part.name + ".bad")
            os.replace(part, bad)
            raise GzpipeError(f"{final.name}: checksum mismatch (md5 {got}, expected {md5}); the download was moved "
                              f"to {bad.name} and will start over when you re-run")
    os.replace(part, final)
    print(f"{final.name}: complete" + (" (md5 verified)" if md5 else ""), flush=True)
    return final


def unpack_images(zip_path: Path, out_dir: Path) -> dict:
    """Extract the JPEGs flat into ``out_dir``: skip ``__MACOSX/`` and ``._*`` entries and non-JPEGs, refuse
    entries whose path escapes the destination and symbolic links, and report what was skipped. Resumable: files already extracted
    with the right size are kept."""
    mark = out_dir / UNPACKED_MARK
    if mark.exists():
        print(f"{out_dir}: already unpacked, skipped", flush=True)
        return {"skipped": "already unpacked"}
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"extracted": 0, "kept": 0, "macos_metadata": 0, "not_jpeg": 0, "refused_unsafe_path": 0,
              "refused_symlink": 0}
    refused = []
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise GzpipeError(f"{zip_path} is not a readable zip ({e}); delete it and re-run the download") from None
    with zf, progress_bar("unpack", total=len(zf.infolist()), unit="files") as bar:
        needed = sum(i.file_size for i in zf.infolist())
        if shutil.disk_usage(out_dir).free < needed:
            raise GzpipeError(f"not enough disk space to unpack {zip_path.name}: {needed / 1e9:.2f} GB needed")
        for info in zf.infolist():
            STOP.check()  # every file is written whole (atomically); the next run skips the finished ones
            bar.advance(1)
            name = info.filename
            pp = PurePosixPath(name.replace("\\", "/"))
            if info.is_dir():
                continue
            if "__MACOSX" in pp.parts or pp.name.startswith("._"):
                counts["macos_metadata"] += 1
                continue
            if pp.is_absolute() or ".." in pp.parts or (len(name) > 1 and name[1] == ":"):
                counts["refused_unsafe_path"] += 1
                refused.append(name)
                continue
            if stat.S_ISLNK(info.external_attr >> 16):  # a link could point anywhere: never create one
                counts["refused_symlink"] += 1
                refused.append(name)
                continue
            if pp.suffix.lower() not in (".jpg", ".jpeg"):
                counts["not_jpeg"] += 1
                continue
            target = out_dir / pp.name
            if target.exists() and target.stat().st_size == info.file_size:
                counts["kept"] += 1
                continue
            tmp = tmp_path_for(target)  # no fsync per file (240,000 of them); the done-mark is written last
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            os.replace(tmp, target)  # replaces a planted link at the target, never follows it
            counts["extracted"] += 1
    mark.write_text("complete\n")
    skipped = {k: v for k, v in counts.items() if k not in ("extracted", "kept") and v}
    print(f"unpacked {counts['extracted'] + counts['kept']} JPEGs into {out_dir}"
          + (f"; skipped {', '.join(f'{v} {k}' for k, v in skipped.items())}" if skipped else "")
          + (f"; refused (path outside the destination): {', '.join(refused[:3])}" if refused else ""), flush=True)
    return {**counts, "refused": refused}
