import math
import shutil

import numpy as np
import pytest
import torch

from conftest import colour_of
from gzpipe.errors import GzpipeError
from gzpipe.loaders import create_loader, resolve_backend
from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD, PRESETS, draw_affine, preset_for
from gzpipe.loaders.shards import iter_samples, split_shards
from gzpipe.manifest import read_manifest

CPU_BACKENDS = ["pil", "dali"]  # dali runs as a CPU-only pipeline here; nvjpeg needs CUDA (tests marked gpu)
CUDA = torch.cuda.is_available()


def _denorm(img: torch.Tensor) -> np.ndarray:
    """3 x H x W normalised -> H x W x 3 in 0..255."""
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    return (img.cpu() * s + m).permute(1, 2, 0).numpy()


def _all(loader):
    ids, imgs, t, m = [], [], [], []
    for b in loader:
        ids += b.ids
        imgs.append(b.images)
        t.append(b.targets)
        m.append(b.mask)
    return ids, torch.cat(imgs), torch.cat(t), torch.cat(m)


def _manifest_ids(root, split):
    ids = []
    for f in split_shards(root, split).files:
        ids += [s["id"] for s in iter_samples(f)]
    return ids


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batch_contract(marker_shards, backend):
    b = next(iter(create_loader(marker_shards, "train", backend, image_size=32, batch_size=4, train=True,
                                device="cpu", workers=1)))
    assert b.images.shape == (4, 3, 32, 32) and b.images.dtype == torch.float32
    assert b.images.is_contiguous(memory_format=torch.channels_last)
    assert b.targets.shape == (4, 30) and b.targets.dtype == torch.float32
    assert b.mask.shape == (4, 30) and b.mask.dtype == torch.bool and b.mask.all()
    assert len(b.ids) == 4 and all(isinstance(i, str) for i in b.ids)
    assert -2.2 < b.images.min() < 0 < b.images.max() < 2.7  # normalised, not 0..255


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_eval_iterates_every_sample_exactly_once(marker_shards, backend, split):
    loader = create_loader(marker_shards, split, backend, image_size=16, batch_size=4, train=False, device="cpu",
                           workers=2)
    ids = _all(loader)[0]
    expected = _manifest_ids(marker_shards, split)
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert len(ids) == read_manifest(marker_shards)["counts"]["per_split"][split]
    assert len(loader) == math.ceil(len(expected) / 4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_targets_stay_attached_to_their_image_in_train_mode(marker_shards, backend):
    loader = create_loader(marker_shards, "train", backend, image_size=48, batch_size=5, train=True, device="cpu",
                           workers=2)
    ids, imgs, t, _ = _all(loader)
    assert len(ids) == (len(_manifest_ids(marker_shards, "train")) // 5) * 5  # train drops the last partial batch
    for k, gid in enumerate(ids):
        i = int(gid) - 1000
        assert t[k, 0].item() == pytest.approx(i / 100.0, abs=1e-6)
        centre = _denorm(imgs[k])[20:28, 20:28].reshape(-1, 3).mean(axis=0)  # the disc's colour at the centre
        assert np.abs(centre - np.array(colour_of(i))).max() < 14, (gid, centre, colour_of(i))


def _dot_angle(img: torch.Tensor) -> float:
    """Angle (degrees) of the white dot around the centre, image y axis down."""
    x = _denorm(img).min(axis=2)  # white is bright in all channels, the disc is not
    ys, xs = np.nonzero(x > 225)
    c = (x.shape[0] - 1) / 2
    return float(np.degrees(np.arctan2(ys.mean() - c, xs.mean() - c)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_eval_is_deterministic_and_train_rotates_and_flips(marker_shards, backend):
    def by_id(train, epoch, seed=42):
        loader = create_loader(marker_shards, "train", backend, image_size=48, batch_size=2, train=train,
                               device="cpu", workers=1, seed=seed)
        loader.set_epoch(epoch)
        ids, imgs, _, _ = _all(loader)
        return dict(zip(ids, imgs))

    e0, e1 = by_id(False, 0), by_id(False, 1)
    for k in e0:
        assert torch.equal(e0[k], e1[k])
        assert abs(_dot_angle(e0[k])) < 3  # eval: the dot stays right of the centre
    angles = []
    for epoch in range(4):
        angles += [_dot_angle(v) for v in by_id(True, epoch).values()]
    angles = np.array(angles)
    assert angles.std() > 60  # spread over the circle ...
    assert (np.histogram(angles, bins=4, range=(-180, 180))[0] > 0).all()  # ... in every quadrant


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_train_is_reproducible_for_a_seed(marker_shards, backend):
    def run(seed):
        loader = create_loader(marker_shards, "train", backend, image_size=24, batch_size=3, train=True, device="cpu",
                               workers=2, seed=seed, shuffle_buffer=8)
        ids, imgs, _, _ = _all(loader)
        return ids, imgs

    a, b, c = run(1), run(1), run(2)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert a[0] != c[0] or not torch.equal(a[1], c[1])


def test_affine_draws_cover_angles_and_flips():
    rng = np.random.default_rng(0)
    mats = np.array([draw_affine(rng, True) for _ in range(4000)])
    dets = np.linalg.det(mats)
    s_lo, s_hi = PRESETS["train"].crop_scale
    scales = np.sqrt(np.abs(dets))
    assert s_lo <= scales.min() and scales.max() <= s_hi
    flips = (dets < 0).mean()  # exactly one flip (h xor v) reverses orientation: p = 0.5
    assert 0.45 < flips < 0.55


@pytest.mark.parametrize("size,crop", [(64, 0.8), (160, 0.8), (64, 0.5)])
def test_backends_agree_in_eval_mode(synth_shards, size, crop):
    """The same galaxies through pil, dali and the nvjpeg backend's warp (run on the CPU) agree, at the default
    crop and at a closer one."""
    from torchvision.io import decode_jpeg

    from gzpipe.loaders.nvjpeg import warp_batch
    from gzpipe.loaders.presets import preset_for

    out = {}
    for be in CPU_BACKENDS:
        for b in create_loader(synth_shards, "val", be, image_size=size, batch_size=4, device="cpu", workers=1,
                               crop=crop):
            for i, gid in enumerate(b.ids):
                out.setdefault(gid, {})[be] = b.images[i]
    for f in split_shards(synth_shards, "val").files:
        for s in iter_samples(f):
            im = decode_jpeg(torch.frombuffer(bytearray(s["jpg"]), dtype=torch.uint8))
            out[s["id"]]["nvjpeg-warp"] = warp_batch([im], draw_affine(None, False, preset_for(False, crop))[None],
                                                     size)[0]

    def diff(a, b):
        return torch.stack([(v[a] - v[b]).abs() for v in out.values()])

    # every backend low-passes by the same power of two before its warp (pil: DCT scaling at decode; nvjpeg: a box
    # average; dali: an antialiased resize), so they agree on average to well under a grey level at every size
    # (tests/test_gpu_review.py holds them to 0.008 at 1.5x to 5.3x reductions on the real sample)
    for a, b in (("dali", "nvjpeg-warp"), ("pil", "dali"), ("pil", "nvjpeg-warp")):
        assert diff(a, b).mean() < 0.01, (a, b)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_crop_shows_the_centre_closer(synth_shards, backend):
    """--crop 0.4 is the centre of the 0.8 view, enlarged 2x: the 0.8 view's middle half, resized, is the 0.4 view
    (to within resampling); train draws scale in the same proportion around it."""
    import torch.nn.functional as F

    from gzpipe.loaders.presets import preset_for

    wide = _all(create_loader(synth_shards, "val", backend, image_size=128, batch_size=8, device="cpu", workers=0))
    close = _all(create_loader(synth_shards, "val", backend, image_size=64, batch_size=8, device="cpu", workers=0,
                               crop=0.4))
    assert wide[0] == close[0]
    middle = F.interpolate(wide[1][:, :, 32:96, 32:96], size=64, mode="bilinear", antialias=True)
    assert (middle - close[1]).abs().mean() < 0.05
    assert (F.interpolate(wide[1], size=64, mode="bilinear", antialias=True) - close[1]).abs().mean() > 0.1
    assert preset_for(True, 0.4).crop_scale == pytest.approx((0.35, 0.45)) and preset_for(False, 0.4).crop_scale == 0.4
    assert preset_for(True, 1.0).crop_scale == pytest.approx((0.875, 1.0))  # never beyond the image
    with pytest.raises(GzpipeError, match="crop must be between 0.2 and 1"):
        create_loader(synth_shards, "val", backend, image_size=64, batch_size=8, device="cpu", crop=1.5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ranks_see_disjoint_parts(marker_shards, backend):
    seen = []
    for rank in range(2):
        loader = create_loader(marker_shards, "train", backend, image_size=16, batch_size=1, train=False,
                               device="cpu", workers=1, rank=rank, world_size=2)
        seen.append(set(_all(loader)[0]))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(_manifest_ids(marker_shards, "train"))


def test_truncated_and_corrupt_tars_are_named(marker_shards, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(marker_shards, root)
    m = read_manifest(root)
    first = [s for s in m["shards"] if s["split"] == "val"][0]["name"]
    data = (root / first).read_bytes()
    (root / first).write_bytes(data[: len(data) // 2])
    for be in CPU_BACKENDS:
        with pytest.raises(GzpipeError, match=f"{first}.*truncated"):
            list(create_loader(root, "val", be, image_size=16, batch_size=2, device="cpu", workers=1))
    # same size, damaged inside: a broken tar header in the middle of the file
    bad = bytearray(data)
    bad[1024 * 5 : 1024 * 5 + 600] = b"\xff" * 600
    (root / first).write_bytes(bytes(bad))
    with pytest.raises(GzpipeError, match=first):
        list(create_loader(root, "val", "pil", image_size=16, batch_size=2, device="cpu", workers=2))


def test_backend_choice_and_errors(marker_shards):
    assert resolve_backend("auto", torch.device("cpu")) == "pil"
    with pytest.raises(GzpipeError, match="choose one of auto, dali, nvjpeg, pil"):
        resolve_backend("turbo", torch.device("cpu"))
    if not CUDA:
        with pytest.raises(GzpipeError, match="needs a CUDA device"):
            create_loader(marker_shards, "val", "nvjpeg", device="cpu")
    with pytest.raises(GzpipeError, match="unknown split"):
        create_loader(marker_shards, "holdout", "pil", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("backend", ["nvjpeg", "dali"])
def test_gpu_backends_contract_and_parity(synth_shards, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed here")
    ref = {}
    for b in create_loader(synth_shards, "val", "pil", image_size=160, batch_size=4, device="cpu", workers=1):
        ref.update(zip(b.ids, b.images))
    n = 0
    for b in create_loader(synth_shards, "val", backend, image_size=160, batch_size=4, device="cuda", workers=1):
        assert b.images.is_cuda and b.targets.is_cuda and b.images.is_contiguous(memory_format=torch.channels_last)
        for gid, img in zip(b.ids, b.images.cpu()):
            assert (img - ref[gid]).abs().mean() < 0.02
            n += 1
    assert n == len(ref)
    tb = next(iter(create_loader(synth_shards, "train", backend, image_size=64, batch_size=4, train=True,
                                 device="cuda", workers=1)))
    assert tb.images.shape == (4, 3, 64, 64)


def test_rebatch_merges_worker_tails():
    from gzpipe.loaders.stream import rebatch

    def b(lo, hi):
        return torch.arange(lo, hi), [str(i) for i in range(lo, hi)]

    parts = [b(0, 4), b(4, 8), b(8, 11), b(11, 13), b(13, 14)]  # two workers' partial tails, then one more
    out = list(rebatch(iter(parts), 4, drop_last=False))
    assert [len(x[1]) for x in out] == [4, 4, 4, 2]
    assert torch.equal(torch.cat([x[0] for x in out]), torch.arange(14))
    assert [len(x[1]) for x in rebatch(iter(parts), 4, drop_last=True)] == [4, 4, 4]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_epochs_reshuffle_with_persistent_workers(marker_shards, backend):
    loader = create_loader(marker_shards, "train", backend, image_size=16, batch_size=2, train=True, device="cpu",
                           workers=2, shuffle_buffer=8)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        orders.append(_all(loader)[0])
    assert sorted(orders[0]) != [] and orders[0] != orders[1] != orders[2]
    loader.set_epoch(1)
    if backend == "pil":  # an epoch can be replayed (resume): same seed + epoch -> same order
        assert _all(loader)[0] == orders[1]


class _Numbered(torch.utils.data.IterableDataset):
    """Image i is filled with i % 251; its id is i (pil's sample tuple: image, targets, mask, id, error)."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        for i in range(info.id, self.n, info.num_workers) if info else range(self.n):
            yield (torch.full((8, 8, 3), i % 251, dtype=torch.uint8), torch.zeros(30),
                   torch.ones(30, dtype=torch.bool), str(i), "")


@pytest.mark.timeout(120)
def test_reused_batch_buffers_are_never_overwritten_while_read():
    """Workers write batches into a ring of reused shared-memory buffers (one per worker here, so most batches find
    it still held): a batch read slowly, after later batches were made, still holds its own images; a partial
    batch, or one made while the buffer is held, comes without one; an epoch left early leaves no worker waiting."""
    import time

    from gzpipe.loaders.slots import BatchSlots

    slots = BatchSlots(workers=2, batch_size=4, per_worker=1)
    dl = torch.utils.data.DataLoader(_Numbered(30), batch_size=4, num_workers=2, collate_fn=slots.collate,
                                     persistent_workers=True, prefetch_factor=2)
    seen, flags = [], []
    for images, _, _, ids, _, flag in dl:
        time.sleep(0.02)  # the workers run ahead as far as they are let
        assert all(int(images[k, 0, 0, 0]) == int(i) % 251 for k, i in enumerate(ids))
        assert flag == -1 or len(ids) == 4
        seen += ids
        flags.append(flag)
        slots.release(flag)
    assert sorted(map(int, seen)) == list(range(30))
    assert {0, 1} <= set(flags)  # each worker's buffer was used
    for _ in range(2):  # two epochs broken off after one batch, buffers never handed back ...
        slots.reset()
        next(iter(dl))
    slots.reset()  # ... a new epoch starts with every buffer free
    assert sorted(int(i) for b in dl for i in b[3] if slots.release(b[-1]) is None) == list(range(30))
    images, *_, flag = slots.collate([_Numbered(3).__iter__().__next__()] * 4)  # main process: no buffer
    assert flag == -1 and images.shape == (4, 8, 8, 3)


def test_cpu_normalisation_reuses_dropped_outputs_only():
    from gzpipe.loaders.contract import normalise_nhwc_uint8

    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD])
    shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    want = (x.float() * scale + shift).permute(0, 3, 1, 2)
    kept = [normalise_nhwc_uint8(x) for _ in range(5)]  # kept batches are never written over
    assert len({k.data_ptr() for k in kept}) == 5 and all(torch.equal(k, want) for k in kept)
    a = normalise_nhwc_uint8(x)
    dropped = {a.data_ptr()} | {k.data_ptr() for k in kept}
    del a, kept
    b = normalise_nhwc_uint8(x + 1)
    c = normalise_nhwc_uint8(x)  # b is still held: c gets another array
    assert c.data_ptr() != b.data_ptr() and torch.equal(c, want)
    assert {b.data_ptr(), c.data_ptr()} <= dropped  # dropped outputs were reused
    assert c.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_turned_eval_view_is_the_stored_image_rotated(synth_shards, backend):
    """``turn`` (the ``angles`` kind of test-time views): the eval crop of the stored pixels rotated about the
    centre, warped once from them. Compared with the stored JPEG sampled bilinearly by scipy at the rotated points;
    90 degrees is the plain view turned a quarter; the loaders of two turns hold the same galaxies in the same order
    (what ``ViewLoader`` reads in lock-step); training draws its own angles and refuses one."""
    from PIL import Image
    from scipy.ndimage import map_coordinates

    from gzpipe.loaders.tta import ViewLoader

    size, crop = 192, 0.8  # 424 px stored: no DCT reduction at this size, so the loader sees every stored pixel
    views = {t: _all(create_loader(synth_shards, "val", backend, image_size=size, batch_size=4, device="cpu",
                                   workers=0, crop=crop, turn=t)) for t in (0.0, 30.0, 90.0)}
    assert views[0.0][0] == views[30.0][0] == views[90.0][0]
    stored = {s["id"]: np.asarray(Image.open(__import__("io").BytesIO(s["jpg"])).convert("RGB"), np.float64)
              for f in split_shards(synth_shards, "val").files for s in iter_samples(f)}
    th = math.radians(30.0)
    p = (2 * np.arange(size) + 1) / size - 1  # output pixel centres, normalised
    px, py = np.meshgrid(p, p)
    qx = crop * (math.cos(th) * px - math.sin(th) * py)
    qy = crop * (math.sin(th) * px + math.cos(th) * py)
    errs, plain = [], []
    for gid, img in zip(views[30.0][0], views[30.0][1]):
        ref = stored[gid]
        side = ref.shape[0]
        xs, ys = side / 2 + qx * side / 2 - 0.5, side / 2 + qy * side / 2 - 0.5  # array index of each sample
        want = np.stack([map_coordinates(ref[..., c], [ys, xs], order=1) for c in range(3)], -1)
        got = _denorm(img)
        errs.append(np.abs(got - want).mean())
        plain.append(np.abs(_denorm(views[0.0][1][views[0.0][0].index(gid)]) - want).mean())
    assert np.mean(errs) < 1.0, errs  # grey levels: the same pixels, rotated
    assert np.mean(plain) > 3 * np.mean(errs)  # the unturned view is another picture
    quarter = torch.rot90(views[0.0][1], 1, dims=(2, 3))
    assert min((quarter - views[90.0][1]).abs().mean(), (torch.rot90(views[0.0][1], -1, dims=(2, 3))
                                                          - views[90.0][1]).abs().mean()) < 0.01
    vl = ViewLoader(lambda t: create_loader(synth_shards, "val", backend, image_size=32, batch_size=4, device="cpu",
                                            workers=0, turn=t), 16, "angles")
    batches = list(vl)
    assert len(batches) == len(vl) and all(len(vs) == 16 and vs[0] is not None for _, vs in batches)
    with pytest.raises(GzpipeError, match="training draws its own"):
        create_loader(synth_shards, "train", backend, image_size=32, batch_size=4, train=True, device="cpu", turn=45)


@pytest.mark.parametrize("stored, crop", [(128, 0.5), (160, 0.4)])
def test_the_plain_eval_view_of_a_crop_at_the_stored_resolution_is_the_stored_pixels(stored, crop):
    """The real preset's eval view (64 px of a crop that spans 64 stored pixels): the central pixels themselves, not
    interpolated (training images always are: they are drawn at any angle and scale)."""
    import cv2

    from gzpipe.loaders.pil import decode_augment

    img = np.random.default_rng(stored).integers(0, 256, (stored, stored, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", img[..., ::-1])  # OpenCV writes BGR: the PNG holds img's RGB
    out = decode_augment(png.tobytes(), draw_affine(None, False, preset_for(False, crop)), 64)
    lo = (stored - 64) // 2
    assert ok and np.array_equal(out, img[lo:lo + 64, lo:lo + 64])


def test_view_loader_refuses_loaders_that_disagree_and_counts_that_are_not_views():
    """The angles kind needs a multiple of 8 views; loaders of two turns that give other galaxies (or fewer
    batches) stop with an error instead of averaging one galaxy's view into another's."""
    from gzpipe.loaders.contract import Batch
    from gzpipe.loaders.tta import ViewLoader, check_tta, turns, view_batches

    def batch(ids):
        return Batch(torch.zeros(len(ids), 3, 8, 8), torch.zeros(len(ids), 30), torch.ones(len(ids), 30, dtype=bool),
                     list(ids))

    assert turns(32, "angles") == [0.0, 22.5, 45.0, 67.5] and turns(8, "dihedral") == [0.0]
    with pytest.raises(GzpipeError, match="multiple of 8"):
        check_tta(12, "angles")
    orders = {0.0: [["a", "b"], ["c"]], 45.0: [["b", "a"], ["c"]]}
    with pytest.raises(GzpipeError, match="different orders"):
        list(ViewLoader(lambda t: [batch(i) for i in orders[t]], 16, "angles"))
    short = {0.0: [["a", "b"], ["c"]], 45.0: [["a", "b"]]}
    with pytest.raises(GzpipeError, match="different orders|numbers of batches"):
        list(ViewLoader(lambda t: [batch(i) for i in short[t]], 16, "angles"))
    with pytest.raises(GzpipeError, match="ViewLoader"):
        list(view_batches([batch(["a"])], 16, "angles"))
    same = list(ViewLoader(lambda t: [batch(i) for i in orders[0.0]], 16, "angles"))
    assert [b.ids for b, _ in same] == orders[0.0] and all(len(vs) == 16 for _, vs in same)
