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

from gzpipe.loaders.contract import Batch
from gzpipe.loaders.presets import IMAGENET_MEAN, IMAGENET_STD, PRESETS, draw_affine, epoch_rng


def _affines(train: bool, batch_size: int, seed: int, rank: int):
    preset = PRESETS["train" if train else "eval"]

    def source(info):  # info: nvidia.dali.types.BatchInfo(iteration, epoch_idx)
        rng = epoch_rng(seed, info.epoch_idx, rank, info.iteration)
        return [draw_affine(rng, train, preset).astype(np.float32).reshape(4) for _ in range(batch_size)]

    return source


def build(shards, *, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int, seed: int,
          rank: int, world: int, shuffle_buffer: int):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.base_iterator import LastBatchPolicy
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    gpu = device.type == "cuda"
    s = float(image_size)

    @pipeline_def(batch_size=batch_size, num_threads=max(1, workers), device_id=(device.index or 0) if gpu else None,
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
        a = fn.external_source(source=_affines(train, batch_size, seed, rank), batch=True, batch_info=True,
                               dtype=types.FLOAT, ndim=1)
        # pixel_matrix() of presets.py, written with DALI arithmetic so it follows each image's own size
        m = fn.stack(a[0] * w / s, a[1] * w / s, w / 2 * (1 - a[0] - a[1]),
                     a[2] * h / s, a[3] * h / s, h / 2 * (1 - a[2] - a[3]))
        m = fn.reshape(m, shape=[2, 3])
        images = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB)
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
    it = DALIGenericIterator([p], ["images", "targets", "mask", "meta"], reader_name="reader", auto_reset=True,
                             last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL)

    def batches(epoch: int):
        for out in it:
            d = out[0]
            ids = [json.loads(bytes(row).rstrip(b"\x00"))["id"] for row in d["meta"].cpu().numpy()]
            images = d["images"].permute(0, 3, 1, 2)  # NHWC storage viewed as NCHW = channels-last
            yield Batch(images.to(device), d["targets"].to(device), d["mask"].to(device).bool(), [str(i) for i in ids])

    return batches
