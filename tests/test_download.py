"""gzpipe download against a loopback HTTP server (127.0.0.1 only) serving fixture files these tests build."""

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from gzpipe import schema
from gzpipe.download import RELEASE, DownloadConfig, run_download
from gzpipe.errors import GzpipeError
from gzpipe.shard import ShardConfig, run_shard


def _dl(dest, what, url=None, sums=None, timeout=60.0):
    return run_download(DownloadConfig(str(dest), tuple(what), url, str(sums) if sums else None, timeout))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    mode = "ok"  # ok | drop | ignore_range
    log: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        name = self.path.lstrip("/").split("?")[0]
        self.log.append((name, self.headers.get("Range")))
        if name not in self.files:
            self.send_error(404, "Not Found")
            return
        data = self.files[name]
        start = 0
        rng = self.headers.get("Range")
        if rng and self.mode != "ignore_range":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "drop":
            self.wfile.write(body[: len(body) // 2])  # half the body, then the connection closes
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.mode, _Handler.log = "ok", []
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _fixtures(synth_release) -> dict[str, bytes]:
    """A tiny release: 6 galaxies' Hart16 rows (gzipped), the mapping, and an image zip with macOS junk,
    a path-traversal entry and a non-JPEG."""
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).iloc[:6]
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[:6]
    buf = io.BytesIO()
    hart.to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for a in mapping["asset_id"]:
            z.writestr(f"images/{a}.jpg", (synth_release / "images" / f"{a}.jpg").read_bytes())
            z.writestr(f"__MACOSX/images/._{a}.jpg", b"\x00\x05\x16\x07junk")
        z.writestr("images/._100000.jpg", b"junk")
        z.writestr("../../evil.jpg", b"\xff\xd8\xff owned")
        z.writestr("images/readme.txt", b"hello")
    return {"gz2_hart16.csv.gz": buf.getvalue(), "gz2_filename_mapping.csv": mapping.to_csv(index=False).encode(),
            "images_gz2.zip": zbuf.getvalue()}


def _sums(tmp_path, files) -> Path:
    p = tmp_path / "md5.txt"
    p.write_text("".join(f"{hashlib.md5(b).hexdigest()}  {n}\n" for n, b in files.items()))
    return p


def test_download_unpack_and_shard_end_to_end(server, synth_release, tmp_path):
    _, url = server
    _Handler.files = _fixtures(synth_release)
    dest = tmp_path / "gz2"
    rep = _dl(dest, ["labels", "mapping", "images"], url, _sums(tmp_path, _Handler.files), timeout=10)
    for n, b in _Handler.files.items():
        assert (dest / n).read_bytes() == b
    assert not list(dest.glob("*.part"))
    u = rep["unpacked"]
    assert u["extracted"] == 6 and u["macos_metadata"] == 7 and u["refused_unsafe_path"] == 1 and u["not_jpeg"] == 1
    assert sorted(p.name for p in (dest / "images").glob("*.jpg")) == [f"{100000 + i}.jpg" for i in range(6)]
    assert not (tmp_path / "evil.jpg").exists() and not any(tmp_path.rglob("evil.jpg"))
    hits = len(_Handler.log)
    _dl(dest, ["labels", "mapping", "images"], url, _sums(tmp_path, _Handler.files), timeout=10)
    assert len(_Handler.log) == hits  # complete files are skipped without a request
    m = run_shard(ShardConfig(catalog=dest / "gz2_hart16.csv.gz", mapping=dest / "gz2_filename_mapping.csv",
                              images=dest / "images", out=tmp_path / "shards", shard_size=4))
    assert m["counts"]["written"] == 6 and m["target"]["names"] == list(schema.TARGET_NAMES)


def test_dropped_connection_leaves_a_part_and_resumes_with_range(server, synth_release, tmp_path):
    _, url = server
    _Handler.files = _fixtures(synth_release)
    sums = _sums(tmp_path, _Handler.files)
    _Handler.mode = "drop"
    with pytest.raises(GzpipeError, match="stopped at .* re-run the same command to resume"):
        _dl(tmp_path, ["images"], url, sums, timeout=10)
    part = tmp_path / "images_gz2.zip.part"
    assert part.exists() and 0 < part.stat().st_size < len(_Handler.files["images_gz2.zip"])
    assert not (tmp_path / "images_gz2.zip").exists()  # never a partial file under the final name
    had = part.stat().st_size
    _Handler.mode = "ok"
    _dl(tmp_path, ["images"], url, sums, timeout=10)
    assert _Handler.log[-1][1] == f"bytes={had}-"  # resumed where the part ended
    assert (tmp_path / "images_gz2.zip").read_bytes() == _Handler.files["images_gz2.zip"]


def test_server_ignoring_range_restarts_cleanly(server, synth_release, tmp_path):
    _, url = server
    _Handler.files = _fixtures(synth_release)
    data = _Handler.files["gz2_filename_mapping.csv"]
    (tmp_path / "gz2_filename_mapping.csv.part").write_bytes(data[:10])
    _Handler.mode = "ignore_range"
    _dl(tmp_path, ["mapping"], url, _sums(tmp_path, _Handler.files), timeout=10)
    assert (tmp_path / "gz2_filename_mapping.csv").read_bytes() == data


def test_checksum_mismatch_is_an_error_and_no_final_file(server, synth_release, tmp_path):
    _, url = server
    _Handler.files = _fixtures(synth_release)
    bad = tmp_path / "md5.txt"
    bad.write_text(f"{'0' * 32}  gz2_filename_mapping.csv\n")
    with pytest.raises(GzpipeError, match="checksum mismatch"):
        _dl(tmp_path, ["mapping"], url, bad, timeout=10)
    assert not (tmp_path / "gz2_filename_mapping.csv").exists()


def test_404_and_refused_connections_are_clear(server, tmp_path):
    _, url = server
    _Handler.files = {}
    with pytest.raises(GzpipeError, match="HTTP 404"):
        _dl(tmp_path, ["mapping"], url, timeout=5)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    with pytest.raises(GzpipeError, match="cannot reach"):
        _dl(tmp_path, ["mapping"], f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(GzpipeError, match="unknown --what"):
        _dl(tmp_path, ["everything"], url)
    assert RELEASE["images"].md5 == "bc647032d31e50c798770cf4430525c7"


@pytest.mark.slow  # ~40 s: a whole (tiny) study; the default run checks the preset's paths (test_field_tools.py)
def test_download_then_the_full_preset_is_the_whole_study(server, synth_release, tmp_path, monkeypatch):
    """The real release in two commands, against a loopback mirror: `gzpipe download`, then `gzpipe study --preset
    full` (its data where download wrote them; a config only shrinks the training for a CPU)."""
    from gzpipe.cli import main

    _, url = server
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str)
    buf, zbuf = io.BytesIO(), io.BytesIO()
    hart.to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
    with zipfile.ZipFile(zbuf, "w") as z:
        for a in mapping["asset_id"]:
            z.writestr(f"images/{a}.jpg", (synth_release / "images" / f"{a}.jpg").read_bytes())
    _Handler.files = {"gz2_hart16.csv.gz": buf.getvalue(), "gz2_filename_mapping.csv": mapping.to_csv(index=False)
                      .encode(), "images_gz2.zip": zbuf.getvalue()}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text(
        "preset: full\nout: art\nshard: {shard_size: 8, val: 0.2, test: 0.2, workers: 1}\n"
        "train: {image_size: 32, epochs: 1, batch_size: 8, workers: 0, tta: 1, device: cpu, backend: pil}\n"
        "boost: {rounds: 3, early_stopping: 3}\nbackbones: [resnet50]\nengines: [xgboost]\nmethods: [equal]\n")
    for argv in (["download", "--base-url", url, "--checksums", str(_sums(tmp_path, _Handler.files))],
                 ["study", "--config", "small.yaml"]):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code in (0, None), argv
    assert (tmp_path / "data/gz2/images").is_dir()
    table = pd.read_csv(tmp_path / "art/model_comparison/comparison_table.csv")
    assert set(table["name"]) == {"resnet50", "xgboost_resnet50", "ensemble_equal"}
