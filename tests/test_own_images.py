"""A scientist's own cutouts, read right (issue 38): non-square images become their centred square on every path,
16-bit, float and FITS images are the galaxy (scaled from their own range, never clipped), FITS read as astropy
writes it. Every image here is a real GZ2 or Kaggle cutout from ../shared, converted by the test with the other
tool's own writer (OpenCV for 16-bit PNG and float TIFF, astropy for FITS), and what is stored or fed to the model
is compared with the original pixels."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from gzpipe import schema
from gzpipe.loaders import Units, create_loader, create_unit_loader
from gzpipe.loaders.shards import split_shards
from gzpipe.predict.inputs import Item, collect_inputs
from gzpipe.predict.parts import FileChunk
from gzpipe.shard import ShardConfig, run_shard

fits = pytest.importorskip("astropy.io.fits", reason="astropy is not installed")

GALAXIES = ("10074", "100577", "102373")  # real GZ2 cutouts of the sample (424 x 424 JPEGs)


def _stored(shards: Path) -> dict[str, np.ndarray]:
    """Every stored image of a shard folder, decoded (RGB), by id."""
    from gzpipe.loaders.shards import iter_samples

    out = {}
    for split in ("train", "val", "test"):
        if not (json.loads((shards / "manifest.json").read_text())["counts"]["per_split"].get(split)):
            continue
        for f in split_shards(shards, split).files:
            for s in iter_samples(f):
                out[s["id"]] = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"))
    return out


def _shard(images: Path, ids: list[str], out: Path, **kw) -> dict:
    """A Hart16-style catalogue of ``ids`` (every galaxy in the train split) and its shards."""
    rows = [{"asset_id": i, **{f"{n}_debiased": 0.5 for n in schema.TARGET_NAMES}} for i in ids]
    pd.DataFrame(rows).to_csv(images.parent / f"{out.name}.csv", index=False)
    return run_shard(ShardConfig(catalog=images.parent / f"{out.name}.csv", images=images, out=out, val=0.01,
                                 test=0.01, **kw))


def _units_loader(paths: list[Path], backend: str, size: int, stretch: str = "auto"):
    items = tuple(Item(p.stem, str(p)) for p in paths)
    return create_unit_loader(Units((FileChunk(items, 0, stretch),), len(items)), backend, size, len(items),
                              device="cpu", workers=0)


def _images(loader) -> list[np.ndarray]:
    """A loader's normalised batches back to H x W x 3 uint8-range float arrays."""
    from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    out = []
    for b in loader:
        x = (b.images.float() * std + mean).permute(0, 2, 3, 1).numpy()
        out += list(x)
    return out


def _extent(img: np.ndarray) -> tuple[int, int]:
    """(width, height) of the bright disc in an image."""
    grey = img.mean(axis=2) if img.ndim == 3 else img
    ys, xs = np.nonzero(grey > 127)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


# ---- 1. one geometry everywhere ---------------------------------------------------------------------------------

def _disc(tmp_path: Path) -> dict[str, Path]:
    """A round galaxy (a disc of diameter 100) in the middle of a 400 x 240 frame, as PNG and JPEG."""
    im = Image.new("RGB", (400, 240), (0, 0, 0))
    ImageDraw.Draw(im).ellipse((150, 70, 250, 170), fill=(255, 255, 255))
    d = tmp_path / "disc"
    d.mkdir()
    im.save(d / "1.png")
    im.save(d / "2.jpg", quality=95)
    return {"png": d / "1.png", "jpg": d / "2.jpg"}


def test_a_round_galaxy_stays_round_through_shard_every_loader_and_predict(tmp_path, monkeypatch):
    """Before issue 38 the 400 x 240 disc was stored 64 x 38 px wide-squashed (shard) and every loader scaled x and y
    apart. Now each path cuts the centred 240 x 240 square: the disc is round and 100/240 of the side everywhere.
    The nvjpeg backend runs here with torchvision's CPU decoder (its private switch): on a GPU only the decoder
    differs. DALI reads shards only: a shard holding the non-square JPEG (as gzpipe before 0.2 stored one without
    --resize) is written with gzpipe's tar writer."""
    from dataclasses import replace

    import gzpipe.loaders.nvjpeg as nv
    from gzpipe.loaders import registry

    files = _disc(tmp_path)
    for rs in (None, 64):
        m = _shard(files["png"].parent, ["1", "2"], tmp_path / f"s{rs}", resize=rs)
        assert m["counts"]["written"] == 2
        assert all("square: 400 x 240 px cut to its centred 240 x 240 square" in c["reason"] for c in m["converted"])
        for img in _stored(tmp_path / f"s{rs}").values():
            side = img.shape[0]
            assert img.shape[:2] == (side, side) == ((rs or 240),) * 2
            w, h = _extent(img)
            assert abs(w - h) <= 1 and abs(w - 100 * side / 240) <= 2
    # every loader backend on the files themselves (predict's path) and DALI on a shard of the non-square JPEG
    want = 100 / (240 * 0.8) * 64  # the eval crop sees 0.8 of the square's side
    seen = {}
    for backend in ("pil", "nvjpeg"):
        if backend == "nvjpeg":  # torchvision's CPU decoder in nvJPEG's place (the private switch)
            monkeypatch.setattr(nv, "_DECODE_DEVICE", "cpu")
            monkeypatch.setitem(registry.BACKENDS, "nvjpeg", replace(registry.BACKENDS["nvjpeg"], needs_cuda=False,
                                                                     available=lambda: (True, "")))
        for kind, path in files.items():
            (img,) = _images(_units_loader([path], backend, 64))
            w, h = _extent(img)
            assert abs(w - h) <= 1 and abs(w - want) <= 2, (backend, kind, w, h)
            seen[(backend, kind)] = img
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (the gpu extra)")
    shards = _non_square_shard(tmp_path, files["jpg"])
    (img,) = _images(create_loader(shards, "train", "dali", 64, 1, device="cpu", workers=1))
    w, h = _extent(img)
    assert abs(w - h) <= 1 and abs(w - want) <= 2
    seen[("dali", "jpg")] = img
    for key, img in seen.items():  # and the same pixels on every path
        assert np.abs(img - seen[("pil", "jpg")]).mean() < 6, key


def _non_square_shard(tmp_path: Path, jpg: Path) -> Path:
    """A one-sample shard folder whose stored JPEG is non-square (as `gzpipe shard` stored one before it cut
    squares): gzpipe's own shard, its tar rewritten by gzpipe's tar writer with the original bytes."""
    from gzpipe.shard.tarwrite import write_shard

    out = tmp_path / "nonsquare"
    _shard(jpg.parent, ["2"], out)
    m = json.loads((out / "manifest.json").read_text())
    (entry,) = [s for s in m["shards"] if s["samples"]]
    from gzpipe.loaders.shards import iter_samples

    (s,) = list(iter_samples(split_shards(out, entry["split"]).files[0]))
    info = write_shard(out / entry["name"], entry["split"], [(s["key"], {
        "jpg": jpg.read_bytes(), "targets": s["targets"].astype("<f4").tobytes(),
        "mask": s["mask"].astype("u1").tobytes(), "json": json.dumps({"id": s["id"]}).encode()})])
    entry.update(bytes=info.bytes, sha256=info.sha256)
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_a_real_non_square_cutout_is_stored_as_its_centre_square(real_sample, tmp_path):
    """A real GZ2 cutout cut to 424 x 300 (the galaxy still centred): shard stores the same pixels as the
    original's centred 300 x 300 square, and the loaders feed the model what they feed it for that square."""
    d = tmp_path / "cut"
    d.mkdir()
    refs = {}
    for gid in GALAXIES:
        rgb = np.asarray(Image.open(real_sample / "images" / f"{gid}.jpg").convert("RGB"))
        Image.fromarray(rgb[62:362, :]).save(d / f"{gid}.png")  # 300 rows, 424 columns
        refs[gid] = rgb[62:362, 62:362]
        Image.fromarray(refs[gid]).save(tmp_path / f"sq{gid}.png")
    _shard(d, list(GALAXIES), tmp_path / "s", resize=150)
    for gid, img in _stored(tmp_path / "s").items():
        ref = np.asarray(Image.fromarray(refs[gid]).resize((150, 150), Image.BILINEAR, reducing_gap=None))
        assert np.abs(img.astype(float) - ref).mean() < 2.0  # JPEG at quality 90
    a = _images(_units_loader([d / f"{g}.png" for g in GALAXIES], "pil", 64))
    b = _images(_units_loader([tmp_path / f"sq{g}.png" for g in GALAXIES], "pil", 64))
    assert max(np.abs(x - y).mean() for x, y in zip(a, b)) < 1.0


# ---- 2. every bit depth, and FITS --------------------------------------------------------------------------------

def _grey(real_sample, gid) -> np.ndarray:
    return np.asarray(Image.open(real_sample / "images" / f"{gid}.jpg").convert("L"))


def _own_range(a: np.ndarray) -> np.ndarray:
    a = a.astype(float)
    return (a - a.min()) / (a.max() - a.min()) * 255


def test_16_bit_png_and_float_tiff_are_the_galaxy_not_noise(real_sample, tmp_path):
    """Real GZ2 cutouts saved by OpenCV as 16-bit greyscale PNG (x 257), 16-bit colour PNG and 32-bit float TIFF
    (0..1): each is stored and fed to the model as the galaxy, scaled from its own range. Before issue 38 the 16-bit
    PNG was stored as noise (Pillow's convert clips) and the float TIFF as a black square."""
    d = tmp_path / "deep"
    d.mkdir()
    grey, colour = {}, {}
    ids = []
    for gid in GALAXIES:
        g = _grey(real_sample, gid)
        rgb = np.asarray(Image.open(real_sample / "images" / f"{gid}.jpg").convert("RGB"))
        grey[f"{gid}1"] = grey[f"{gid}3"] = g
        colour[f"{gid}2"] = rgb
        assert cv2.imwrite(str(d / f"{gid}1.png"), g.astype(np.uint16) * 257)
        assert cv2.imwrite(str(d / f"{gid}2.png"), rgb[..., ::-1].astype(np.uint16) * 257)
        assert cv2.imwrite(str(d / f"{gid}3.tif"), g.astype(np.float32) / 255)
        ids += [f"{gid}1", f"{gid}2", f"{gid}3"]
    m = _shard(d, ids, tmp_path / "s")
    assert m["counts"]["written"] == 9 and m["config"]["stretch"] == "auto"
    stored = _stored(tmp_path / "s")
    for gid, g in grey.items():
        s = stored[gid].astype(float)
        assert np.abs(s.mean(axis=2) - _own_range(g)).mean() < 2.0, gid  # the galaxy, at JPEG's error
        assert np.corrcoef(s.mean(axis=2).ravel(), g.ravel())[0, 1] > 0.99
    for gid, rgb in colour.items():
        assert np.abs(stored[gid].astype(float) - _own_range(rgb)).mean() < 2.5, gid
    # predict's path: the files themselves through the loader, as the 8-bit picture of the same range
    for gid in grey:
        (a,) = _images(_units_loader([next(d.glob(f"{gid}.*"))], "pil", 64))
        ref = d / f"ref{gid}.png"
        Image.fromarray(_own_range(grey[gid]).round().astype(np.uint8)).save(ref)
        (b,) = _images(_units_loader([ref], "pil", 64))
        assert np.abs(a - b).mean() < 0.6, gid


def _fits_bytes(data: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


def test_fits_one_plane_a_cube_and_three_band_files(real_sample, tmp_path):
    """FITS written by astropy from real cutouts (fluxes: the picture's values x 3.7 + 120, rows bottom-up as FITS
    stores them): one plane is the greyscale galaxy, a 3-plane cube (g, r, z = blue, green, red) and the same bands
    as three files <id>_g/_r/_z.fits (plain or .fits.gz) the colour one; with --stretch linear they are the
    original pixels, with the default (asinh for FITS) the same order of brightness with the faint parts lifted."""
    d = tmp_path / "fits"
    d.mkdir()
    grey, colour = {}, {}
    for gid in GALAXIES:
        g = _grey(real_sample, gid)
        rgb = np.asarray(Image.open(real_sample / "images" / f"{gid}.jpg").convert("RGB"))
        flux = lambda a: np.flipud(a.astype(np.float32) * 3.7 + 120)  # noqa: E731 - FITS rows run bottom-up
        (d / f"{gid}1.fits").write_bytes(_fits_bytes(flux(g)))
        (d / f"{gid}2.fits").write_bytes(_fits_bytes(np.stack([flux(rgb[..., c]) for c in (2, 1, 0)])))
        for band, c in zip("grz", (2, 1, 0)):
            raw = _fits_bytes(flux(rgb[..., c]))
            if gid == GALAXIES[0]:
                (d / f"{gid}3_{band}.fits.gz").write_bytes(gzip.compress(raw))
            else:
                (d / f"{gid}3_{band}.fits").write_bytes(raw)
        grey[f"{gid}1"], colour[f"{gid}2"], colour[f"{gid}3"] = g, rgb, rgb
    ids = list(grey) + list(colour)
    m = _shard(d, ids, tmp_path / "lin", stretch="linear")
    assert m["counts"]["written"] == 9, m["rejected"]
    assert {c["reason"].split("; ")[1] for c in m["converted"]} == {
        "depth: FITS (1 band) with the linear stretch", "depth: FITS (3 bands) with the linear stretch"}
    stored = _stored(tmp_path / "lin")
    for gid, g in grey.items():
        assert np.abs(stored[gid].astype(float).mean(axis=2) - _own_range(g)).mean() < 2.0, gid
    for gid, rgb in colour.items():
        assert np.abs(stored[gid].astype(float) - _own_range(rgb)).mean() < 2.5, gid
    for gid in GALAXIES:  # three band files are the cube
        assert np.abs(stored[f"{gid}3"].astype(float) - stored[f"{gid}2"]).mean() < 0.5
    m = _shard(d, ids, tmp_path / "auto")
    assert m["config"]["stretch"] == "auto" and "asinh stretch" in m["converted"][0]["reason"]
    auto = _stored(tmp_path / "auto")
    for gid, g in grey.items():
        s = auto[gid].astype(float).mean(axis=2)
        rank = pd.Series(s.ravel()).corr(pd.Series(g.ravel().astype(float)), method="spearman")
        assert rank > 0.97, gid  # the same order of brightness
        faint = g < np.percentile(g, 90)
        assert s[faint].mean() > _own_range(g)[faint].mean() + 5  # faint structure lifted
    # predict finds the band files of a folder and makes each FITS as the model's stretch says
    found = collect_inputs([d])
    paths = {it.id: it.path for it in found.items}
    assert paths[f"{GALAXIES[1]}3"].endswith(f"{GALAXIES[1]}3_{{g,r,z}}.fits") and not found.skipped
    assert paths[f"{GALAXIES[0]}3"].endswith("_{g,r,z}.fits.gz") and len(found.items) == 9
    lin = _images(_units_loader([Path(paths[f"{GALAXIES[1]}3"])], "pil", 64, "linear"))[0]
    ref = tmp_path / "ref.png"
    Image.fromarray(_own_range(colour[f"{GALAXIES[1]}3"]).round().astype(np.uint8)).save(ref)
    assert np.abs(lin - _images(_units_loader([ref], "pil", 64))[0]).mean() < 0.6


def test_predict_makes_deep_images_as_the_models_training_images_were(real_sample, tmp_path):
    """A model trained on FITS shards records their stretch (metrics.json, the export's config.json); predict on
    the same FITS files then gives what the training shards gave (the run's own test predictions)."""
    from gzpipe.export import run_export
    from gzpipe.predict import PredictConfig, run_predict
    from gzpipe.train.config import resolve
    from gzpipe.train.run import run_train

    d = tmp_path / "fits"
    d.mkdir()
    ids = sorted(p.stem for p in (real_sample / "images").glob("*.jpg"))[:24]
    for gid in ids:
        g = _grey(real_sample, gid).astype(np.float32)
        (d / f"{gid}.fits").write_bytes(_fits_bytes(np.flipud(g[::4, ::4] * 2.0 + 10)))  # 106 px cutouts
    rows = [{"asset_id": i, **{f"{n}_debiased": 0.3 + 0.01 * k for n in schema.TARGET_NAMES}}
            for k, i in enumerate(ids)]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    run_shard(ShardConfig(catalog=tmp_path / "c.csv", images=d, out=tmp_path / "s", stretch="percentile", val=0.25,
                          test=0.25))
    art = tmp_path / "art"
    run_train(resolve("timm:resnet10t", str(tmp_path / "s"), None, out=str(art), image_size=32, batch_size=4,
                      epochs=1, workers=0, device="cpu", warmup_epochs=1, backend="pil"))
    run_dir = art / "timm:resnet10t"
    recorded = json.loads((run_dir / "metrics.json").read_text())["input"]
    assert recorded == {"stretch": "percentile", "stored_size": None, "quality": 90}  # shards as given, not resized
    test = pd.read_parquet(run_dir / "test_predictions.parquet").set_index("id")
    files = [str(d / f"{i}.fits") for i in test.index]
    for model in (run_dir, run_export(run_dir, tmp_path / "export")):
        got = run_predict(PredictConfig(str(model), files, out=str(tmp_path / "p.csv"), workers=0, device="cpu",
                                        backend="pil")).frame().set_index("id")
        assert np.abs(got.loc[test.index, list(schema.TARGET_NAMES)].to_numpy()
                      - test[list(schema.TARGET_NAMES)].to_numpy()).max() < 0.02  # JPEG's rounding in the shards
    assert json.loads((tmp_path / "export/config.json").read_text())["gzpipe"]["input"]["stretch"] == "percentile"


def test_a_folder_of_fits_and_other_files_is_named_and_subfolders_are_said(tmp_path):
    from gzpipe.errors import GzpipeError

    (tmp_path / "a" / "images" / "spirals").mkdir(parents=True)
    (tmp_path / "a" / "images" / "notes.txt").write_text("x")
    with pytest.raises(GzpipeError, match=r"1 subfolder\(s\) \(.*spirals\) were not searched: predict reads the "
                                          r"files of the folders it is given"):
        collect_inputs([tmp_path / "a" / "images"])


def test_the_shard_summary_names_each_conversion(real_sample, tmp_path, capsys):
    """PNG input was summed up as 'greyscale/CMYK JPEGs stored as RGB'; each kind of conversion is named."""
    from gzpipe.cli import main

    d = tmp_path / "png"
    d.mkdir()
    for gid in GALAXIES:
        Image.open(real_sample / "images" / f"{gid}.jpg").save(d / f"{gid}.png")
    pd.DataFrame([{"asset_id": i, **{f"{n}_debiased": 0.5 for n in schema.TARGET_NAMES}} for i in GALAXIES]).to_csv(
        tmp_path / "c.csv", index=False)
    try:
        main(["shard", "--catalog", str(tmp_path / "c.csv"), "--images", str(d), "--out", str(tmp_path / "s")])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    out = capsys.readouterr().out
    assert "converted: 3 other formats re-encoded as JPEG (each with what was done" in out
    assert "greyscale/CMYK" not in out
