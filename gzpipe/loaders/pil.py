"""`pil` backend: DataLoader workers decode (JPEG DCT scaling when the output is smaller than the stored image) and
apply the preset as one bilinear affine warp on the CPU.

The warp is OpenCV's ``warpAffine`` (SIMD): 0.6 ms per 224 px output on this CPU against 1.6 ms for Pillow's
``Image.transform``, which would otherwise cost twice the JPEG decode. JPEGs decode in OpenCV's libjpeg-turbo (the
same pixels as Pillow's, without Pillow's copy out to an array). Workers send uint8 (a quarter of float32's bytes);
the batch is normalised where it is consumed, on the GPU or once per batch on the CPU.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gzpipe import pixels
from gzpipe.loaders.contract import Batch, normalise_nhwc_uint8
from gzpipe.loaders.presets import DEFAULT_CROP, draw_affine, pixel_matrix, preset_for
from gzpipe.loaders.slots import BatchSlots
from gzpipe.loaders.stream import ShardStream, rebatch
from gzpipe.pixels import DEFAULT_STRETCH
from gzpipe.shard.images import jpeg_frame
from gzpipe.stopping import dataloader_worker_init

# One OpenCV thread, set before any warp can start OpenCV's thread pool: a pool started in this process would not
# survive fork(), and DataLoader workers forked after it deadlock in their first warp. Parallelism comes from the
# loader's worker processes instead.
cv2.setNumThreads(1)


def _reduction(width: int, height: int, need: int) -> int:
    """The scale JPEG draft mode (DCT scaling) picks: the largest of 1, 2, 4, 8 that keeps ``need`` pixels."""
    scale = min(width // need, height // need)
    return 8 if scale >= 8 else 4 if scale >= 4 else 2 if scale >= 2 else 1


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def _need(a: np.ndarray, image_size: int) -> int:
    """Input pixels across that the warp needs: it samples at spacing |a| * W / S, so decoding at 1/2, 1/4 or 1/8
    size is free detail-wise as long as the decoded image keeps S / |a| pixels."""
    s = float(np.sqrt(abs(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0])))  # a is a scaled rotation (+ mirror): |a| = sqrt|det|
    return math.ceil(image_size / max(s, 1e-3))


def decode(data: bytes, need: int | None, stretch: str = DEFAULT_STRETCH, name: str = "image") -> tuple[np.ndarray, bool]:
    """Image bytes -> (H x W x 3 uint8, whether its channels are BGR), reduced when ``need`` allows.

    JPEGs decode in OpenCV's libjpeg-turbo straight into an array, at 1/2, 1/4 or 1/8 size by DCT scaling when
    ``need`` pixels across still fit (the rule of Pillow's draft mode; the decode is the costliest step, and
    Pillow's copy out to an array costs half as much again). Any other format (PNG, TIFF, FITS ...) is made 8-bit
    RGB as `shard` makes it (``gzpipe.pixels.decode``, deep images and FITS through ``stretch``) and reduced by the
    same factor with a box filter, so the same pixels reach the model through the same reduction whatever the file
    format."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            w, h, _ = jpeg_frame(data, "image")
            factor = _reduction(w, h, need) if need else 1
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor])
        except Exception:  # noqa: BLE001 - an odd header: Pillow below says what is wrong, or decodes it
            arr = None
        if arr is not None and arr.ndim == 3 and arr.shape[2] == 3:
            return arr, True
        im = Image.open(io.BytesIO(data))
        if need:
            im.draft("RGB", (need, need))
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB")), False
    arr, _ = pixels.decode(data, name, stretch)
    factor = _reduction(arr.shape[1], arr.shape[0], need) if need else 1
    if factor > 1:
        arr = np.asarray(Image.fromarray(arr).reduce(factor))
    return arr, False


def decode_augment(data: bytes, a: np.ndarray, image_size: int, draft: bool = True,
                   stretch: str = DEFAULT_STRETCH, name: str = "image") -> np.ndarray:
    """Image bytes -> image_size x image_size x 3 uint8 (RGB) through the affine ``a`` (normalised coordinates over
    the image's centred square): one decode (``decode``) and one bilinear warp."""
    arr, bgr = decode(data, _need(a, image_size) if draft else None, stretch, name)
    m = pixel_matrix(a, arr.shape[1], arr.shape[0], image_size)
    # OpenCV puts pixel centres at integers, presets.py at i + 0.5: shift both ends by half a pixel
    m[:, 2] += m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
    out = cv2.warpAffine(arr, m, (image_size, image_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if bgr else out


class _Transform:
    """Worker side: decode, warp, and hand over H x W x 3 uint8 (normalised in the main process, per batch)."""

    def __init__(self, image_size: int, train: bool, crop: float = DEFAULT_CROP, turn: float = 0.0):
        self.image_size, self.train, self.preset = image_size, train, preset_for(train, crop, turn)

    def __call__(self, s: dict, rng: np.random.Generator):
        a = draw_affine(rng, self.train, self.preset)
        img = decode_augment(s["jpg"], a, self.image_size, stretch=s.get("stretch", DEFAULT_STRETCH),
                             name=str(s.get("name", s["key"])))
        return self._out(torch.from_numpy(img), s, "")

    def failed(self, s: dict, reason: str):
        """Stand-in for a sample that could not be decoded: a black image and the reason."""
        return self._out(torch.zeros((self.image_size, self.image_size, 3), dtype=torch.uint8), s, reason)

    def _out(self, img: torch.Tensor, s: dict, error: str):
        return img, torch.from_numpy(s["targets"]), torch.from_numpy(s["mask"]), s["id"], error


SHM = "/dev/shm"


def check_shared_memory(need: int, workers: int, batch_size: int, where: str = SHM) -> None:
    """The workers' batch buffers live in shared memory (``/dev/shm``): at batch 256 with 15 workers at 224 px they
    hold 3.2 GB, more than a container gives by default (Docker: 64 MB), and running out is a bus error in a
    worker, not a message. Refuse beforehand, saying what to change."""
    import os

    if workers == 0 or not os.path.isdir(where):
        return
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    if need > free:
        from gzpipe.errors import GzpipeError

        raise GzpipeError(f"the pil loader's batch buffers need {need / 2**30:.1f} GB of shared memory ({workers} "
                          f"workers x 6 batches of {batch_size}) and {where} has {free / 2**30:.2f} GB free: give "
                          "fewer --workers or a smaller --batch-size, or more shared memory (a container: docker run "
                          "--shm-size=16g)")


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, shuffle_buffer: int, crop: float = DEFAULT_CROP, turn: float = 0.0):
    on_gpu = device.type == "cuda"
    prefetch = 4
    check_shared_memory(workers * (prefetch + 2) * batch_size * image_size * image_size * 3, workers, batch_size)
    ds = ShardStream(shards, _Transform(image_size, train, crop, turn), train, seed, rank, shuffle_buffer)
    # each worker can have `prefetch` batches queued, one being consumed and one being written: reused buffers
    slots = BatchSlots(workers, batch_size, per_worker=prefetch + 2)
    dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, generator=torch.Generator().manual_seed(seed),
                    worker_init_fn=dataloader_worker_init, pin_memory=on_gpu, persistent_workers=workers > 0,
                    prefetch_factor=prefetch if workers > 0 else None, collate_fn=slots.collate)
    held: list[int] = []

    def received():
        """The workers' batches without their buffer flags (kept in ``held`` until the batch is consumed)."""
        for *fields, flag in iter(dl):
            held.append(flag)
            yield tuple(fields)

    def batches(epoch: int):
        ds.epoch = epoch  # read by the (persistent) workers when this epoch's iteration starts
        slots.reset()  # buffers left in flight by an epoch that ended early are never read
        held.clear()
        for images, targets, mask, ids, errors in rebatch(received(), batch_size, drop_last=train):
            # uint8 crosses from the workers (a quarter of float32's bytes) and is normalised once per batch where it
            # is consumed: on the GPU, or on the CPU in one look-up pass (measured: benchmarks/RESULTS.md)
            images = normalise_nhwc_uint8(images.to(device, non_blocking=True))
            # every batch received so far is now consumed or copied (rebatch concatenates what it keeps): its
            # buffer goes back to its worker
            for flag in held:
                slots.release(flag)
            held.clear()
            yield Batch(images, targets.to(device, non_blocking=True), mask.to(device, non_blocking=True).bool(),
                        list(ids), list(errors) if any(errors) else None)

    return batches
