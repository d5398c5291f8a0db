"""`nvjpeg` backend: tar samples are read by CPU workers, JPEGs decoded in batches by
``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) and augmented with torch ops on the GPU.

  worker: sample -> JPEG bytes (other formats decoded to 3 x H x W) + its affine
  -> ``_collate``: one batch as ONE flat uint8 buffer with each sample's size and shape (a tensor that crosses the
     worker boundary costs a shared-memory file descriptor: one per JPEG was thousands in flight at batch 256 and
     "Too many open files" at ``ulimit -n 1024``)
  -> main: ``_split`` into views of that buffer -> ``rebatch`` -> ``_decode`` (batched; a batch that fails is decoded
     one by one, so one damaged file costs only its own row) -> ``warp_batch`` on the device.

The warp is the preset's affine through ``affine_grid`` + ``grid_sample``; it runs on any device. ``_DECODE_DEVICE``
is a private switch that decodes with torchvision's CPU decoder instead: the tests run the whole backend (workers,
collation, batched decode and its fallback, warp) on a CPU with it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gzpipe.errors import GzpipeError
from gzpipe.loaders.contract import Batch, normalisation
from gzpipe.loaders.presets import DEFAULT_CROP, draw_affine, preset_for, square_affine
from gzpipe.loaders.stream import ShardStream, rebatch
from gzpipe.stopping import dataloader_worker_init

_DECODE_DEVICE: str | None = None  # tests only: "cpu" decodes with torchvision's CPU decoder (no CUDA needed)


def prefilter_factor(a: np.ndarray, width: int, height: int, image_size: int) -> int:
    """The reduction (1, 2, 4 or 8) an image of this size takes before the warp: what the `pil` backend's decoder
    takes by DCT scaling (``pil._reduction`` of ``pil._need``), for the batch's closest view, so that every backend
    samples the same low-passed picture. Warping a full-size image straight to a small output samples it sparsely
    and aliases beyond a 2x reduction."""
    from gzpipe.loaders.pil import _need, _reduction

    need = max(_need(np.asarray(m), image_size) for m in np.asarray(a).reshape(-1, 2, 2))
    return _reduction(width, height, need)


def warp_batch(images: list[torch.Tensor], a: np.ndarray, image_size: int) -> torch.Tensor:
    """Decoded uint8 images (each 3 x H x W, one device) + affines (N x 2 x 2, normalised coordinates) ->
    N x 3 x S x S float32, normalised, channels-last. Each image is first box-reduced by ``prefilter_factor`` (a
    2, 4 or 8 pixel average: what JPEG's DCT scaling gives the `pil` backend), then warped bilinearly."""
    dev = images[0].device
    images = [_reduced(im, a[i], image_size) for i, im in enumerate(images)]
    # each image's centred square (a non-square one is never stretched): the affine in its own coordinates
    lin, off = square_affine(a, np.array([im.shape[-1] for im in images]), np.array([im.shape[-2] for im in images]))
    theta = torch.from_numpy(np.concatenate([lin, off[..., None]], axis=-1).astype(np.float32))
    if dev.type == "cuda":  # pinned, so that the copy is really asynchronous (from pageable memory it syncs)
        theta = theta.pin_memory()
    theta = theta.to(dev, non_blocking=True)
    grid = F.affine_grid(theta, [len(images), 3, image_size, image_size], align_corners=False)
    if all(im.shape == images[0].shape for im in images):
        x = torch.stack(images)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:  # mixed stored sizes: warp one by one (normalised coordinates make the matrix size-independent)
        out = torch.cat([F.grid_sample(im[None], grid[i : i + 1], mode="bilinear",
                                       padding_mode="zeros", align_corners=False) for i, im in enumerate(images)])
    scale, shift = normalisation(dev)  # made on the device once, not copied for every batch
    return (out * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)).contiguous(memory_format=torch.channels_last)


def _reduced(im: torch.Tensor, a: np.ndarray, image_size: int) -> torch.Tensor:
    """One decoded image as float32, box-reduced by its ``prefilter_factor`` (partial boxes at the edges, as
    Pillow's ``reduce`` and DCT scaling keep them)."""
    x = im.to(torch.float32)
    f = prefilter_factor(a, int(im.shape[-1]), int(im.shape[-2]), image_size)
    if f == 1:
        return x
    return F.avg_pool2d(x[None], f, stride=f, ceil_mode=True, count_include_pad=False)[0]


class _Raw:
    """Worker side: no decoding of JPEGs, only their bytes (1-D uint8) and the affine drawn for this sample. Other
    formats (a PNG given to `predict`) are decoded here, to 3 x H x W uint8; a sample that failed is 3 x 1 x 1. Each
    sample also says where it came from: its file name for files a user gave (``tolerant``: a failure is that row's
    error), else its key and shard (verified data: a failure means a damaged shard)."""

    def __init__(self, train: bool, crop: float = DEFAULT_CROP, turn: float = 0.0):
        self.train, self.preset, self.eval_preset = train, preset_for(train, crop, turn), preset_for(False, crop, turn)

    def __call__(self, s: dict, rng: np.random.Generator):
        a = draw_affine(rng, self.train, self.preset)
        data = s["jpg"]
        if data[:3] == b"\xff\xd8\xff":
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:  # PNG, 16-bit, float, FITS ...: 8-bit RGB as `shard` makes it (gzpipe.pixels)
            from gzpipe.pixels import DEFAULT_STRETCH, decode

            arr, _ = decode(data, str(s.get("name", s["key"])), s.get("stretch", DEFAULT_STRETCH))
            payload = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
        return payload, torch.as_tensor(a, dtype=torch.float32), torch.from_numpy(s["targets"]), \
            torch.from_numpy(s["mask"]), s["id"], "", _origin(s)

    def failed(self, s: dict, reason: str):
        a = torch.as_tensor(draw_affine(None, False, self.eval_preset), dtype=torch.float32)
        return torch.zeros((3, 1, 1), dtype=torch.uint8), a, torch.from_numpy(s["targets"]), \
            torch.from_numpy(s["mask"]), s["id"], reason, _origin(s)


def _origin(s: dict) -> tuple[bool, str]:
    """(tolerant, what to call it): a user's file by its name (a failure is its row's error), a shard's sample by
    its key and shard (verified data: a failure means damage)."""
    if s.get("tolerant"):
        return True, str(s.get("name", s["key"]))
    return False, f"sample {s['key']} in shard {s['shard']}"


def _collate(items):
    """Worker side: a batch's payloads as one flat uint8 buffer plus, per sample, its byte count and its image
    shape (0, 0, 0 for JPEG bytes): five tensors cross to the main process, whatever the batch size."""
    payloads, a, t, m, ids, errors, origins = zip(*items)
    flat = torch.cat([p.reshape(-1) for p in payloads])
    sizes = torch.tensor([[p.numel(), *(p.shape if p.dim() == 3 else (0, 0, 0))] for p in payloads],
                         dtype=torch.int64)
    return flat, sizes, torch.stack(a), torch.stack(t), torch.stack(m), list(ids), list(errors), list(origins)


def _split(flat: torch.Tensor, sizes: torch.Tensor, *rest) -> tuple:
    """Main process: the flat buffer back into one view per sample (no copy): JPEG bytes or a decoded image."""
    payloads, offset = [], 0
    for n, c, h, w in sizes.tolist():
        v = flat[offset:offset + n]
        payloads.append(v.view(c, h, w) if c else v)
        offset += n
    return (payloads, *rest)


@contextlib.contextmanager
def _ordered(device: torch.device):
    """On CUDA, decode on a side stream that the consuming stream then waits for. torchvision's decoder allocates
    its outputs on the current stream and writes them from a private stream that does not wait for it, so it can be
    handed a block that kernels queued on the current stream are still reading (torchvision PR #9606). A side
    stream's blocks are never freed by the training step's kernels; the outputs are marked as used by the consuming
    stream. CPU decoding needs none of this (not testable without a GPU)."""
    if device.type != "cuda":
        yield
        return
    consumer = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(consumer)
    with torch.cuda.stream(side):
        yield
    consumer.wait_stream(side)


def _gpu_decode(payloads, dev):
    """The batched decode (nvJPEG on a GPU): a list of JPEG byte tensors -> 3 x H x W uint8 on ``dev``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(payloads, mode=ImageReadMode.RGB, device=dev)


def _cpu_decode(payload: torch.Tensor) -> torch.Tensor:
    """One JPEG on the CPU: libjpeg-turbo through torchvision, else Pillow (``gzpipe.pixels``) for what it cannot."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(payload, mode=ImageReadMode.RGB)
    except RuntimeError:
        from gzpipe.pixels import decode

        arr, _ = decode(bytes(payload.numpy()))
        return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)


def _resource_error(e: BaseException) -> bool:
    """The GPU itself failing (out of memory, a CUDA error), not an image: re-raised, never blamed on an image."""
    msg = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in msg or "cuda error" in msg


def _decode(payloads: list[torch.Tensor], device: torch.device, errors: list[str],
            origins: list[tuple[bool, str]]) -> tuple[list[torch.Tensor], list[str]]:
    """JPEG bytes decoded in one batched nvJPEG call, images decoded by the workers moved to the device.

    nvJPEG fails a whole batch for one image it cannot decode; then each image is decoded on its own, and one that
    nvJPEG cannot decode but is a sound JPEG (CMYK, arithmetic coding, 12-bit: nvJPEG lacks them) is decoded on the
    CPU instead, so only a really damaged file costs its row (a user's file: a black stand-in and its error; a
    shard's sample: a damaged shard). A failure of the GPU itself (out of memory, a CUDA error) is re-raised, and so
    is a batch whose every image nvJPEG refused while the CPU decoded them all: the decoder does not work here."""
    dev = torch.device(_DECODE_DEVICE) if _DECODE_DEVICE else device
    errors = list(errors)
    jpeg = [i for i, p in enumerate(payloads) if p.dim() == 1]
    out = [p.to(device, non_blocking=True) if p.dim() == 3 else None for p in payloads]
    if not jpeg:
        return out, errors
    with _ordered(dev):
        try:
            decoded = _gpu_decode([payloads[i] for i in jpeg], dev)
        except RuntimeError as batch_error:
            if _resource_error(batch_error):
                raise
            decoded, refused, first = [], 0, ""
            for i in jpeg:
                try:
                    decoded.append(_gpu_decode([payloads[i]], dev)[0])
                    continue
                except RuntimeError as e:
                    if _resource_error(e):
                        raise
                    refused += 1
                    first = first or (str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                decoded.append(_decode_on_cpu(payloads[i], origins[i], errors, i))
            if refused == len(jpeg) > 1 and all(d is not None for d in decoded):
                raise GzpipeError(f"the GPU JPEG decoder (torchvision's nvJPEG) refused all {len(jpeg)} images of a "
                                  f"batch that the CPU decodes ({first}): it does not work here; use --backend pil "
                                  "(or dali)")
        if dev.type == "cuda":
            consumer = torch.cuda.default_stream(dev)
            for im in decoded:
                if im is not None:
                    im.record_stream(consumer)
    for i, im in zip(jpeg, decoded):
        out[i] = (im if im is not None else torch.zeros((3, 1, 1), dtype=torch.uint8)).to(device, non_blocking=True)
    return out, errors


def _decode_on_cpu(payload: torch.Tensor, origin: tuple[bool, str], errors: list[str], i: int):
    """An image nvJPEG refused, decoded on the CPU; a file no decoder reads is its row's error (a user's file) or a
    damaged shard (a shard's sample)."""
    try:
        return _cpu_decode(payload)
    except Exception as e:  # noqa: BLE001 - any decoder's failure means this image is bad
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        tolerant, what = origin
        if not tolerant:
            raise GzpipeError(f"{what} cannot be decoded ({msg}); the shard was damaged after it was written: "
                              "`gzpipe verify` lists every damaged shard and how to rebuild them") from None
        errors[i] = f"cannot read image {what}: {msg}"
        return None


def decodes_here() -> tuple[bool, str]:
    """Whether torchvision's GPU decoder decodes a JPEG here (a one-image probe on the current CUDA device)."""
    import io

    from PIL import Image

    try:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (120, 60, 30)).save(buf, format="JPEG")
        out = _gpu_decode([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)],
                          torch.device("cuda", torch.cuda.current_device()))
        torch.cuda.synchronize()
        if tuple(out[0].shape) != (3, 16, 16):
            return False, f"nvJPEG decoded a test JPEG to shape {tuple(out[0].shape)}"
        return True, "decodes on the GPU"
    except Exception as e:  # noqa: BLE001 - any failure means: nvJPEG cannot decode here
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return False, f"torchvision's GPU JPEG decoder does not work here ({type(e).__name__}: {first})"


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, shuffle_buffer: int, crop: float = DEFAULT_CROP, turn: float = 0.0):
    if device.type != "cuda" and _DECODE_DEVICE is None:
        raise RuntimeError("the nvjpeg loader backend decodes on a CUDA device; on the CPU use dali or pil")
    ds = ShardStream(shards, _Raw(train, crop, turn), train, seed, rank, shuffle_buffer)
    dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, drop_last=False, generator=torch.Generator().manual_seed(seed), collate_fn=_collate,
                    worker_init_fn=dataloader_worker_init,
                    pin_memory=False, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def made(epoch: int):
        ds.epoch = epoch
        received = (_split(*b) for b in iter(dl))  # views of each batch's one buffer, then merged across workers
        for payloads, a, targets, mask, ids, errors, origins in rebatch(received, batch_size, drop_last=train):
            decoded, errors = _decode(payloads, device, errors, origins)
            images = warp_batch(decoded, a.numpy(), image_size)
            yield Batch(images, targets.to(device, non_blocking=True), mask.to(device, non_blocking=True).bool(),
                        list(ids), list(errors) if any(errors) else None)

    def batches(epoch: int):
        yield from ahead(lambda: made(epoch), device)

    return batches


PREFETCH = 2  # batches decoded and warped ahead of the one being consumed


def ahead(make, device: torch.device, depth: int = PREFETCH):
    """The batches of the generator ``make()``, made in a background thread ``depth`` batches ahead: nvJPEG's host
    side (the Huffman decoding of small images runs on the CPU) and the launches of the decode and warp kernels then
    overlap the training step instead of preceding it. On CUDA the thread works on a stream of its own and each
    batch carries an event that the consumer's stream waits for (no host sync), its tensors marked as used by the
    consumer's stream so that the allocator never reuses them early. The consumer stopping early (a loop capped at
    ``len(loader)`` steps, a stop) ends the thread, and its generator, before the next epoch starts one."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        gen = make()
        try:
            stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for b in gen:
                    event = None
                    if stream is not None:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not put((b, event, None)):
                        return
            put((None, None, done))
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread, where it belongs
            put((None, None, e))
        finally:
            gen.close()  # the DataLoader iterator is released here, before the next epoch takes it

    t = threading.Thread(target=work, name="gzpipe-nvjpeg", daemon=True)
    t.start()
    try:
        while True:
            b, event, err = q.get()
            if err is done:
                return
            if err is not None:
                raise err
            if event is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(event)
                for x in (b.images, b.targets, b.mask):
                    x.record_stream(consumer)
            yield b
    finally:
        stop.set()
        while t.is_alive():  # let the thread see the stop: drain what it managed to put
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()
