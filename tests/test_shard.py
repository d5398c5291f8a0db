import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.manifest import read_manifest
from gzpipe.shard import ShardConfig, run_shard

wds = pytest.importorskip("webdataset", reason="webdataset is not installed here (the GPU machine gets it as a wheel)")


def _cfg(rel, out, **kw):
    return ShardConfig(catalog=rel / "gz2_hart16.csv", mapping=rel / "gz2_filename_mapping.csv",
                       images=rel / "images", out=out, **{"shard_size": 16, "val": 0.2, "test": 0.2, **kw})


def _files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_samples_round_trip(synth_shards, synth_release):
    m = read_manifest(synth_shards)
    assert m["counts"]["written"] == 48 and m["counts"]["rejected"] == 0
    assert sum(m["counts"]["per_split"].values()) == 48 and all(m["counts"]["per_split"].values())
    assert m["target"]["names"] == list(schema.TARGET_NAMES)
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    seen = []
    for s in m["shards"]:
        assert (synth_shards / s["index"]).exists()
        assert hashlib.sha256((synth_shards / s["name"]).read_bytes()).hexdigest() == s["sha256"]
        for sample in wds.WebDataset(str(synth_shards / s["name"]), shardshuffle=False):
            assert "." not in sample["__key__"]
            meta = json.loads(sample["json"])
            y = np.frombuffer(sample["targets"], "<f4")
            mk = np.frombuffer(sample["mask"], "u1")
            assert y.shape == (30,) and mk.shape == (30,)
            row = hart[hart["dr7objid"] == meta["dr7objid"]].iloc[0]
            expect = row[[f"{n}_debiased" for n in schema.TARGET_NAMES]].to_numpy(float)
            ok = mk.astype(bool)
            np.testing.assert_allclose(y[ok], expect[ok], atol=1e-6)
            assert sample["jpg"] == (synth_release / "images" / f"{meta['id']}.jpg").read_bytes()
            seen.append(meta["id"])
    assert sorted(seen) == sorted(str(100000 + i) for i in range(48))


def test_index_matches_dali_wds2idx(synth_shards, tmp_path):
    from wds2idx import IndexCreator

    for s in read_manifest(synth_shards)["shards"]:
        with IndexCreator(str(synth_shards / s["name"]), str(tmp_path / "ref.idx"), verbose=False) as ic:
            ic.create_index()
        assert (tmp_path / "ref.idx").read_text() == (synth_shards / s["index"]).read_text()


def test_byte_identical_reruns_any_worker_count_and_row_order(synth_release, synth_shards, tmp_path):
    run_shard(_cfg(synth_release, tmp_path / "a", workers=2))
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    hart.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv", index=False)
    cfg = _cfg(synth_release, tmp_path / "b")
    cfg.catalog = tmp_path / "shuffled.csv"
    run_shard(cfg)
    ref = {k: v for k, v in _files(synth_shards).items() if k != "manifest.json"}
    assert {k: v for k, v in _files(tmp_path / "a").items() if k != "manifest.json"} == ref
    b = {k: v for k, v in _files(tmp_path / "b").items() if k != "manifest.json"}
    assert set(b) == set(ref)  # same shards; row numbers in the JSON differ, ids and order do not
    first = _files(tmp_path / "a")
    run_shard(_cfg(synth_release, tmp_path / "a", workers=2))  # a re-run reuses finished shards, same bytes
    assert _files(tmp_path / "a") == first


def test_splits_stable_under_fraction_and_added_data(synth_release, tmp_path):
    def split_of(out):
        res = {}
        for s in read_manifest(out)["shards"]:
            for sample in wds.WebDataset(str(out / s["name"]), shardshuffle=False):
                res[json.loads(sample["json"])["id"]] = s["split"]
        return res

    full = split_of(run_shard(_cfg(synth_release, tmp_path / "f")) and tmp_path / "f")
    half = run_shard(_cfg(synth_release, tmp_path / "h", fraction=0.5))
    assert half["counts"]["excluded_by_fraction"] + half["counts"]["inputs"] == 48
    sub = split_of(tmp_path / "h")
    assert 10 < len(sub) < 40 and all(full[k] == v for k, v in sub.items())
    bigger = split_of(run_shard(_cfg(synth_release, tmp_path / "h7", fraction=0.7)) and tmp_path / "h7")
    assert set(sub) <= set(bigger)  # a larger fraction keeps a superset


def test_resize_reencodes_baseline_jpeg(synth_release, tmp_path):
    m = run_shard(_cfg(synth_release, tmp_path / "r", resize=64, quality=85))
    assert m["stored_size"] == 64
    sample = next(iter(wds.WebDataset(str(tmp_path / "r" / m["shards"][0]["name"]), shardshuffle=False)))
    im = Image.open(io.BytesIO(sample["jpg"]))
    assert im.size == (64, 64) and im.format == "JPEG" and "progressive" not in im.info


@pytest.fixture()
def bad_release(synth_release, tmp_path):
    """A release with one of each kind of bad row."""
    rel = tmp_path / "bad"
    (rel / "images").mkdir(parents=True)
    hart = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str}).iloc[:20].copy()
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str).iloc[:20]
    for a in mapping["asset_id"]:
        (rel / "images" / f"{a}.jpg").write_bytes((synth_release / "images" / f"{a}.jpg").read_bytes())
    img = rel / "images"
    (img / "100000.jpg").unlink()  # missing image
    data = (img / "100001.jpg").read_bytes()
    (img / "100001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    corrupt = bytearray((img / "100002.jpg").read_bytes())
    sos = corrupt.find(b"\xff\xda")
    corrupt[sos + 2 : sos + 40] = b"\xff\xc9" * 19  # garbage markers in the scan header
    (img / "100002.jpg").write_bytes(bytes(corrupt))
    Image.new("RGB", (10, 10)).save(img / "100003.jpg", format="PNG")  # a PNG named .jpg: re-encoded, kept
    (img / "100004.jpg").write_text("this is not an image\n")  # a text file named .jpg
    hart.loc[5, "t02_edgeon_a04_yes_debiased"] = 1.5  # out of range
    hart = pd.concat([hart, hart.iloc[[6]]], ignore_index=True)  # duplicate id (row 20 repeats row 6)
    mapping = mapping[mapping["asset_id"] != "100007"]  # no mapping row
    hart.to_csv(rel / "gz2_hart16.csv", index=False)
    mapping.to_csv(rel / "gz2_filename_mapping.csv", index=False)
    return rel


def test_bad_rows_rejected_with_reasons_and_accounted(bad_release, tmp_path):
    with pytest.raises(GzpipeError, match=r"33% of the rows were rejected .*more than --max-rejected 0.1"):
        run_shard(_cfg(bad_release, tmp_path / "strict"))
    assert (tmp_path / "strict/manifest.json").exists()  # written for inspection all the same
    m = run_shard(_cfg(bad_release, tmp_path / "o", max_rejected=0.5))
    c = m["counts"]
    assert c["inputs"] == 21 and c["inputs"] == c["written"] + c["rejected"]
    assert c["rejected"] == 7 and c["written"] == 14
    reasons = {r["id"]: r["reason"] for r in m["rejected"]}
    assert "not found" in reasons["100000"]
    assert "truncated" in reasons["100001"]
    assert "corrupt" in reasons["100002"]
    assert "100003" not in reasons  # Pillow reads it: stored as a JPEG like the rest
    assert "a text file" in reasons["100004"]
    assert "outside [0, 1]" in reasons["100005"]
    assert "duplicate id" in reasons["100006"]
    assert any("mapping" in r["reason"] for r in m["rejected"])
    assert m["rejected_by_reason"] == {"corrupt_jpeg": 1, "duplicate_id": 1, "missing_image": 1, "no_mapping": 1,
                                       "not_image": 1, "out_of_range": 1, "truncated_jpeg": 1}


def test_bad_config_is_a_clear_error(synth_release, tmp_path):
    with pytest.raises(GzpipeError, match=r"val \(0.6\) and test \(0.5\) must be in"):
        run_shard(_cfg(synth_release, tmp_path / "x", val=0.6, test=0.5))
    with pytest.raises(GzpipeError, match="image folder not found"):
        run_shard(ShardConfig(catalog=synth_release / "gz2_hart16.csv", images=tmp_path / "nope", out=tmp_path / "y"))


def test_killed_run_leaves_no_partial_tar_and_resumes_identically(synth_release, synth_shards, tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "gzpipe", "shard", "--catalog", str(synth_release / "gz2_hart16.csv"),
           "--mapping", str(synth_release / "gz2_filename_mapping.csv"), "--images", str(synth_release / "images"),
           "--out", str(out), "--shard-size", "16", "--val", "0.2", "--test", "0.2"]
    for delay in (1.2, 1.5, 1.8):  # kill at a few points (import takes ~1 s, packing a few hundred ms)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        for tar in out.glob("*.tar") if out.exists() else []:
            with tarfile.open(tar) as t:  # whatever is under a final name is a complete tar
                t.getmembers()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    assert _files(out) | {"manifest.json": ""} == _files(synth_shards) | {"manifest.json": ""}
    assert not list(out.glob(".*tmp*"))


def test_real_sample_shards(real_sample, tmp_path):
    m = run_shard(ShardConfig(catalog=real_sample / "labels_manifest_800.csv", images=real_sample / "images",
                              out=tmp_path / "real", shard_size=200, workers=2, resize=64))
    c = m["counts"]
    assert c["written"] == 800 and c["rejected"] == 0
    assert 560 < c["per_split"]["train"] < 720


@pytest.mark.parametrize("name,size", [("1.jpg", 0), ("100038.targets", 120), ("x" * 90 + ".jpg", 123456789)])
def test_ustar_header_equals_pythons_tarfile(name, size):
    from gzpipe.shard.tarwrite import ustar_header

    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = size, 0, 0o644, "", ""
    assert ustar_header(name, size) == ti.tobuf(format=tarfile.USTAR_FORMAT)


def test_a_split_left_empty_by_the_id_hash_is_said_at_shard_time(synth_release, tmp_path, capsys):
    """Splits go by id hash: 5 galaxies at --val 0.05 can leave val empty. `shard` says so, with the fix; training
    on them then fails naming the split and the same fix (it used to say only "split 'val' has no samples")."""
    df = pd.read_csv(synth_release / "gz2_hart16.csv", dtype={"dr7objid": str})
    mapping = pd.read_csv(synth_release / "gz2_filename_mapping.csv", dtype=str)
    df.insert(0, "asset_id", mapping.set_index("objid").loc[df["dr7objid"], "asset_id"].to_numpy())
    from gzpipe.shard.splits import assign_splits

    ids = df["asset_id"].astype(str).tolist()
    split = assign_splits(ids, 42, 0.05, 0.3)
    rows = [i for i, s in enumerate(split) if s == "train"][:3] + [i for i, s in enumerate(split) if s == "test"][:2]
    df.iloc[rows].to_csv(tmp_path / "five.csv", index=False)
    capsys.readouterr()
    m = run_shard(ShardConfig(catalog=tmp_path / "five.csv", images=synth_release / "images", out=tmp_path / "s",
                              val=0.05, test=0.3))
    assert m["counts"]["per_split"] == {"train": 3, "val": 0, "test": 2}
    out = capsys.readouterr().out
    assert "note: the val split holds no galaxies (train 3, val 0, test 2; val share 0.05)" in out
    assert "give more galaxies or a larger --val" in out
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    with pytest.raises(GzpipeError, match=r"split 'val' has no galaxies in .*s \(train 3, val 0, test 2\): re-shard "
                                          r"with more galaxies or a larger --val"):
        run_train(resolve("resnet50", str(tmp_path / "s"), None, out=str(tmp_path / "a"), image_size=32, epochs=1,
                          batch_size=2, workers=0, device="cpu", backend="pil"))
