"""`dali` backend: ``fn.readers.webdataset`` over the tars and their ``.idx``, decoding with
``fn.decoders.image`` (``device="mixed"``: nvJPEG on a GPU; CPU otherwise), the preset's affine through
``fn.warp_affine``, normalisation in ``fn.crop_mirror_normalize``, served by ``DALIGenericIterator``.

Without a GPU the pipeline runs CPU-only (``device_id=None``), which is how CI tests it. Under DDP each rank
reads ``shard_id=rank, num_shards=world_size``. The per-sample affines come from an external source seeded by
(seed, epoch, rank, iteration), drawn by the same ``draw_affine`` as the other backends.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from gzpipe.errors import GzpipeError
from gzpipe.loaders.contract import Batch
from gzpipe.loaders.presets import DEFAULT_CROP, IMAGENET_MEAN, IMAGENET_STD, draw_affine, epoch_rng, preset_for

# The share of JPEGs the mixed decoder gives the GPU's hardware JPEG engine (A100 / H100 / H200 have one), the rest
# going to the CUDA decoder: DALI 2's own default for its nvImageCodec decoder, set here so that it is a decision
# (measure it with benchmarks/gpu_suite.sh step 2 before changing it).
HW_DECODER_LOAD = 0.9
# libjpeg's chroma upsampling on the GPU too: the pil and nvjpeg backends (libjpeg-turbo, torchvision) upsample
# chroma that way, and the backends' parity tests compare pixels.
FANCY_UPSAMPLING = True


def threads(workers: int) -> int:
    """DALI's CPU threads for one pipeline: this rank's share of the cores (the reader, the JPEG parsing and, on a
    CPU-only pipeline, the decoding all run on them), at least ``workers``; the tar backends' worker count alone
    (2 by default) starved a GPU's pipeline."""
    import os

    from gzpipe.info import cpu_count

    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, workers, min(16, cpu_count() // local_ranks))


def _affines(train: bool, batch_size: int, seed: int, rank: int, crop: float = DEFAULT_CROP, turn: float = 0.0):
    preset = preset_for(train, crop, turn)

    def source(info):  # info: nvidia.dali.types.BatchInfo(iteration, epoch_idx)
        rng = epoch_rng(seed, info.epoch_idx, rank, info.iteration)
        return [draw_affine(rng, train, preset).astype(np.float32).reshape(4) for _ in range(batch_size)]

    return source


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, world: int, shuffle_buffer: int, crop: float = DEFAULT_CROP, turn: float = 0.0):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath
    from nvidia.dali.plugin.base_iterator import LastBatchPolicy
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    gpu = device.type == "cuda"
    s = float(image_size)

    @pipeline_def(batch_size=batch_size, num_threads=threads(workers), device_id=(device.index or 0) if gpu else None,
                  seed=seed + rank, prefetch_queue_depth=2, exec_dynamic=True)
    def pipe():
        jpg, targets, mask, meta = fn.readers.webdataset(
            paths=[str(f.path) for f in shards.files], index_paths=[str(f.index) for f in shards.files],
            ext=["jpg", "targets", "mask", "json"],
            dtypes=[types.UINT8, types.FLOAT, types.UINT8, types.UINT8],
            missing_component_behavior="error", random_shuffle=train, initial_fill=shuffle_buffer,
            seed=seed + rank, shard_id=rank, num_shards=world, pad_last_batch=not train, stick_to_shard=True,
            name="reader")
        shape = fn.cast(fn.peek_image_shape(jpg), dtype=types.FLOAT)  # H, W, C of the stored image
        h, w = shape[0], shape[1]
        a = fn.external_source(source=_affines(train, batch_size, seed, rank, crop, turn), batch=True, batch_info=True,
                               dtype=types.FLOAT, ndim=1)
        images = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                   hw_decoder_load=HW_DECODER_LOAD, jpeg_fancy_upsampling=FANCY_UPSAMPLING)
        # the low-pass the other backends take before the warp (nvjpeg.prefilter_factor; pil's DCT scaling): a
        # reduction by 1, 2, 4 or 8, antialiased, so that the warp never samples the full image sparsely
        need = dmath.ceil(s / dmath.max(dmath.sqrt(dmath.abs(a[0] * a[3] - a[1] * a[2])), 1e-3))
        f = dmath.pow(2.0, dmath.floor(dmath.log2(dmath.clamp(dmath.floor(dmath.min(w, h) / need), 1.0, 8.0))))
        w, h = dmath.ceil(w / f), dmath.ceil(h / f)
        images = fn.resize(images, resize_x=w, resize_y=h, antialias=True, interp_type=types.INTERP_LINEAR)
        # pixel_matrix() of presets.py, written with DALI arithmetic so it follows each image's own size: the
        # centred square (side q at integer offsets x0, y0: gzpipe.pixels.square_box), never a stretch
        q = dmath.min(w, h)
        cx = dmath.floor((w - q) / 2) + q / 2
        cy = dmath.floor((h - q) / 2) + q / 2
        m = fn.stack(a[0] * q / s, a[1] * q / s, cx - q / 2 * (a[0] + a[1]),
                     a[2] * q / s, a[3] * q / s, cy - q / 2 * (a[2] + a[3]))
        m = fn.reshape(m, shape=[2, 3])
        images = fn.warp_affine(images, matrix=m, size=[s, s], interp_type=types.INTERP_LINEAR, fill_value=0,
                                inverse_map=True)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC",
                                          mean=[v * 255 for v in IMAGENET_MEAN], std=[v * 255 for v in IMAGENET_STD])
        meta = fn.pad(meta, fill_value=0)  # JSON bytes padded to the batch's longest: the iterator wants dense
        if gpu:
            targets, mask = targets.gpu(), mask.gpu()
        return images, targets, mask, meta

    p = pipe()
    p.build()
    try:
        it = DALIGenericIterator([p], ["images", "targets", "mask", "meta"], reader_name="reader", auto_reset=True,
                                 last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL)
    except RuntimeError as e:
        if "no data in the pipeline" not in str(e):
            raise
        raise GzpipeError(f"the {shards.split} split gives each of {world} rank(s) about {shards.samples // world} "
                          f"samples, fewer than --batch-size {batch_size}; use a smaller batch") from None

    state = {"open": False}  # an epoch left before its end: a loop capped at len(loader) steps, or stopped

    def batches(epoch: int):
        if state["open"]:  # DALI cannot reset mid-epoch: read what is left of the last one (at most a batch) and drop it
            for _ in it:
                pass
        state["open"] = True
        for out in it:
            d = out[0]
            ids = [json.loads(bytes(row).rstrip(b"\x00"))["id"] for row in d["meta"].cpu().numpy()]
            images = d["images"].permute(0, 3, 1, 2)  # NHWC storage viewed as NCHW = channels-last
            yield Batch(images.to(device), d["targets"].to(device), d["mask"].to(device).bool(), [str(i) for i in ids])
        state["open"] = False

    return batches


def decodes_here() -> tuple[bool, str]:
    """Whether DALI can decode a JPEG here: a one-image pipeline on the GPU ("mixed", nvJPEG) where CUDA is usable,
    else on the CPU. ``nvidia.dali`` imports without its nvJPEG / nvImageCodec libraries and fails only then."""
    import io

    import numpy as np
    from PIL import Image

    try:
        from nvidia.dali import fn, pipeline_def, types

        from gzpipe.device import cuda_available

        gpu = cuda_available()
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (120, 60, 30)).save(buf, format="JPEG")
        data = np.frombuffer(buf.getvalue(), np.uint8)

        import torch

        # this rank's own GPU (torchrun's LOCAL_RANK, set as the current device): under 8 ranks, probing GPU 0 from
        # each put 8 DALI contexts on one card
        @pipeline_def(batch_size=1, num_threads=1, device_id=torch.cuda.current_device() if gpu else None)
        def probe():
            jpg = fn.external_source(source=lambda: [data], batch=True, dtype=types.UINT8)
            return fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                     hw_decoder_load=HW_DECODER_LOAD, jpeg_fancy_upsampling=FANCY_UPSAMPLING)

        p = probe()
        p.build()
        (out,) = p.run()
        shape = tuple(out.as_cpu().at(0).shape) if gpu else tuple(out.at(0).shape)
        if shape != (16, 16, 3):
            return False, f"DALI decoded a test JPEG to shape {shape}"
        return True, "decodes" + (" on the GPU" if gpu else " on the CPU")
    except Exception as e:  # noqa: BLE001 - any failure means: DALI cannot decode here
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return False, f"DALI cannot decode here ({type(e).__name__}: {first})"
