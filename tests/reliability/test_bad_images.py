"""Bad images at shard time and at predict time: zero-byte, truncated, corrupt Huffman data, CMYK and greyscale
JPEGs, PNG and text files named .jpg, a decompression bomb. `shard` rejects each with a reason (or stores a
greyscale / CMYK JPEG or a PNG as an RGB JPEG and lists it under `converted`); `predict` writes an error row per bad
file and predicts the rest."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzpipe import schema
from gzpipe.predict import PredictConfig, run_predict
from gzpipe.shard import ShardConfig, run_shard
from gzpipe.train.config import resolve
from gzpipe.train.run import run_train


def _galaxy(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:96, :96] - 48
    disc = np.exp(-(x**2 + y**2) / 300.0)[..., None] * rng.uniform(120, 250, 3)
    return Image.fromarray(np.clip(disc + rng.normal(0, 8, (96, 96, 3)), 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _entropy_start(data: bytes) -> int:
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _corrupt_huffman(data: bytes, seed: int, fill: bytes = b"\xff\xd3" * 100) -> bytes:
    """A run of the entropy-coded data overwritten, by default with stray restart markers: the decoder runs out of
    image before it runs out of data, which the decode check sees (800 of 800 real GZ2 images caught)."""
    start = _entropy_start(data)
    rng = np.random.default_rng(seed)
    at = int(rng.integers(start + 10, start + (len(data) - start) // 3))
    return data[:at] + fill + data[at + len(fill):]


def _flipped_bits(data: bytes, seed: int) -> bytes:
    """A dozen bytes changed inside the entropy-coded data (no marker created): libjpeg decodes past the damage,
    hits the end marker early, fills the rest with grey and only prints a warning."""
    start = _entropy_start(data)
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    for p in rng.integers(start + 20, start + (len(data) - start) // 2, 12):
        if out[p] != 0xFF and out[p - 1] != 0xFF:
            out[p] = int(rng.integers(0, 255)) & 0xFE
    return bytes(out)


def _bomb() -> bytes:
    """A 1-colour 10,000 x 10,000 JPEG: ~1 MB on disk, 300 MB decoded."""
    return _jpeg(Image.new("L", (10_000, 10_000)), optimize=False)


# name -> (bytes, expected shard outcome: a rejection code, "converted" or "written")
def _cases() -> dict[str, tuple[bytes, str]]:
    good = _jpeg(_galaxy(0))
    return {  # noqa: E501
        "good": (good, "written"),
        "progressive": (_jpeg(_galaxy(1), progressive=True), "written"),
        "zero_byte": (b"", "not_image"),
        "truncated": (good[: len(good) // 2], "truncated_jpeg"),
        "huffman_1": (_corrupt_huffman(_jpeg(_galaxy(2)), 1), "corrupt_jpeg"),
        "huffman_2": (_corrupt_huffman(_jpeg(_galaxy(3)), 2), "corrupt_jpeg"),
        "huffman_3": (_corrupt_huffman(_jpeg(_galaxy(4)), 3), "corrupt_jpeg"),
        # Known limit: Pillow drops libjpeg's "premature end of data segment" warning, so bit flips that keep the
        # decoder reading to the end marker go through (the damaged blocks decode grey). See README.md.
        "flipped_bits": (_flipped_bits(_jpeg(_galaxy(8)), 4), "written"),
        "zero_run": (_corrupt_huffman(_jpeg(_galaxy(9)), 5, fill=bytes(200)), "written"),
        "cmyk": (_jpeg(_galaxy(5).convert("CMYK")), "converted"),
        "greyscale": (_jpeg(_galaxy(6).convert("L")), "converted"),
        "png": (_png(_galaxy(7)), "re-encoded"),
        "text": (b"this is not an image\n", "not_image"),
        "bomb": (_bomb(), "too_large"),
    }


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("badimg")
    (root / "images").mkdir()
    table = _cases()
    rows = []
    for i, (name, (data, _)) in enumerate(table.items()):
        (root / "images" / f"{i + 1}.jpg").write_bytes(data)
        rows.append({"asset_id": i + 1, **{f"{n}_debiased": 0.5 for n in schema.TARGET_NAMES}})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root, {i + 1: (name, outcome) for i, (name, (_, outcome)) in enumerate(table.items())}


@pytest.mark.parametrize("verify", ["decode", "header"])
def test_shard_rejects_or_converts_each_with_a_reason(cases, tmp_path, verify):
    root, expect = cases
    m = run_shard(ShardConfig(catalog=root / "labels.csv", images=root / "images", out=tmp_path / "s", shard_size=4,
                              max_rejected=1.0,
                              val=0.1, test=0.1, verify=verify))
    rejected = {int(r["id"]): r["reason"] for r in m["rejected"]}
    converted = {int(r["id"]): r["reason"] for r in m["converted"]}
    for i, (name, outcome) in expect.items():
        if outcome == "converted":
            assert i in converted and "stored as RGB" in converted[i], name
        elif outcome == "re-encoded":  # a format Pillow reads: stored as a JPEG every loader backend decodes
            assert i in converted and "PNG re-encoded as a JPEG" in converted[i], (name, converted.get(i))
        elif outcome == "written":
            assert i not in rejected, (name, rejected.get(i))
        elif outcome == "corrupt_jpeg" and verify == "header":
            assert i not in rejected  # header mode trusts the entropy data (documented); decode mode catches it
        else:
            assert i in rejected and rejected[i].strip(), name
    codes = m["rejected_by_reason"]
    if verify == "decode":
        assert codes == {"corrupt_jpeg": 3, "not_image": 2, "too_large": 1, "truncated_jpeg": 1}
    c = m["counts"]
    assert c["inputs"] == c["written"] + c["rejected"] and c["converted"] == 3
    # what was written decodes to 3 channels everywhere: the converted ones are RGB JPEGs now
    import tarfile

    for s in m["shards"]:
        with tarfile.open(tmp_path / "s" / s["name"]) as t:
            for mem in t:
                if mem.name.endswith(".jpg"):
                    assert Image.open(t.extractfile(mem)).mode == "RGB"


def test_predict_reports_each_bad_file_and_predicts_the_rest(cases, train_shards, tmp_path):
    root, expect = cases
    run_train(resolve("resnet50", str(train_shards), None, out=str(tmp_path), image_size=32, batch_size=8, epochs=1,
                      workers=0, device="cpu", backend="pil"))
    df = run_predict(PredictConfig(model=str(tmp_path / "resnet50"), inputs=[str(root / "images")],
                                   out=str(tmp_path / "p.csv"), batch_size=4, workers=2)).frame()
    df = df.set_index("id")
    assert len(df) == len(expect)
    for i, (name, outcome) in expect.items():
        err = df.loc[str(i), "error"]
        if outcome in ("written", "converted", "re-encoded"):  # predict takes PNGs, whatever their name
            assert err == "" and np.isfinite(df.loc[str(i), list(schema.TARGET_NAMES)].to_numpy(float)).all(), name
        else:
            assert err and df.loc[str(i), list(schema.TARGET_NAMES)].isna().all(), (name, err)
    assert "too large" in df.loc[str([k for k, v in expect.items() if v[0] == "bomb"][0]), "error"]
