"""`gzpipe predict --model artifacts/<name> --out predictions.csv IMAGES...`: apply any trained model to images.

Inputs: image files, folders (their .jpg/.jpeg/.png/.tif/.bmp/.webp files), or tar shards (their .jpg members).
Models: a backbone run folder, a booster (through its backbone's features) or an ensemble (its members' weighted
mean). Images go through the same eval preset as in training (centre crop, resize, normalise), decoded in
DataLoader workers and batched on the GPU when there is one. ``--tta N`` averages N rotated/flipped views.

Output: one row per image: ``id`` (file stem or shard key), ``error`` (empty, or why the image could not be
used - the rest of the batch goes on), the 30 fractions under their Hart16 answer names, and with
``cumulative`` the Kaggle-style cumulative fractions (``Class1.1`` ...) computed down the tree.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from gzpipe import schema
from gzpipe.errors import GzpipeError
from gzpipe.fileio import atomic_open
from gzpipe.loaders.contract import normalise_nhwc_uint8
from gzpipe.loaders.pil import decode_augment
from gzpipe.loaders.presets import PRESETS
from gzpipe.models import create_model
from gzpipe.progress import progress_bar
from gzpipe.shard.images import ImageRejected, check_image
from gzpipe.signals import dataloader_worker_init
from gzpipe.train import checkpoint as ckpt

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass(frozen=True)
class Item:
    id: str
    path: str  # file, or "<tar>::<member>"


def collect_inputs(inputs: list[str | Path]) -> list[Item]:
    items: list[Item] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            items += [Item(f.stem, str(f)) for f in sorted(p.iterdir())
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        elif p.suffix == ".tar" and p.is_file():
            try:
                with tarfile.open(p) as t:
                    items += [Item(m.name.split(".", 1)[0], f"{p}::{m.name}") for m in t.getmembers()
                              if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg"))]
            except tarfile.TarError as e:
                raise GzpipeError(f"cannot read tar {p}: {e}") from None
        elif p.exists():
            items.append(Item(p.stem, str(p)))
        else:
            raise GzpipeError(f"input not found: {p}")
    if not items:
        raise GzpipeError("no images found in the inputs (folders are searched for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    return items


def tta_affines(n: int) -> list[np.ndarray]:
    """``n`` views: rotations evenly spaced over the circle, every other one mirrored; the first is the eval view."""
    s = PRESETS["eval"].crop_scale
    out = []
    for i in range(max(1, n)):
        th = 2 * np.pi * i / max(1, n)
        flip = -1.0 if i % 2 else 1.0
        c, si = np.cos(th), np.sin(th)
        out.append(np.array([[c, -si], [si, c]]) @ np.diag([flip * s, s]))
    return out


class _Images(Dataset):
    def __init__(self, items: list[Item], image_size: int, affines: list[np.ndarray]):
        self.items, self.size, self.affines = items, image_size, affines
        self._tars: dict[str, tarfile.TarFile] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, path: str) -> bytes:
        if "::" in path:
            tar, member = path.split("::", 1)
            if tar not in self._tars:
                self._tars[tar] = tarfile.open(tar)
            return self._tars[tar].extractfile(member).read()
        return Path(path).read_bytes()

    def __getitem__(self, i: int):
        it = self.items[i]
        try:
            data = self._read(it.path)
            check_image(data, Path(it.path.split("::")[-1]).name)
            views = np.stack([decode_augment(data, a, self.size) for a in self.affines])
            return torch.from_numpy(views), it.id, ""
        except ImageRejected as e:
            return None, it.id, str(e)
        except Exception as e:  # noqa: BLE001 - any failure of one file becomes that row's error
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "cannot identify image file" in msg:
                msg = "not an image in a format Pillow reads"
            return None, it.id, f"cannot read image {Path(it.path.split('::')[-1]).name}: {msg}"


def _collate(batch):
    ok = [b for b in batch if b[0] is not None]
    views = torch.stack([b[0] for b in ok]) if ok else None
    return views, [b[1] for b in batch], [b[2] for b in batch]


def model_kind(model_dir: Path) -> str:
    if (model_dir / "checkpoints" / ckpt.BEST).exists():
        return "backbone"
    if (model_dir / "boost_complete.txt").exists():
        return "booster"
    if (model_dir / "weights.json").exists():
        return "ensemble"
    raise GzpipeError(f"{model_dir} is not a trained gzpipe model (no checkpoints/best_model.pth, boost_complete.txt "
                      "or weights.json)")


class _Backbone:
    def __init__(self, run_dir: Path, device: torch.device):
        best = ckpt.load(run_dir / "checkpoints" / ckpt.BEST)
        cfg = best["config"]
        self.image_size = cfg["image_size"]
        self.model = create_model(cfg["backbone"], cfg["head"])
        self.model.load_state_dict(best["model"])
        self.model.eval().to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.device = device

    @torch.inference_mode()
    def features_and_preds(self, views: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """views: N x V x S x S x 3 uint8 -> (features of the first view, predictions averaged over views)."""
        n, v = views.shape[:2]
        x = normalise_nhwc_uint8(views.reshape(n * v, *views.shape[2:]).to(self.device, non_blocking=True))
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.no_grad()
        with ctx:
            f = self.model.features(x)
            p = self.model.head(f)
        f = f.float().reshape(n, v, -1)[:, 0]
        p = p.float().reshape(n, v, -1).mean(dim=1)
        return f.cpu().numpy(), p.cpu().numpy()


def _load_booster(bdir: Path):
    cfg = json.loads((bdir / "config.json").read_text())
    metrics = json.loads((bdir / "metrics.json").read_text())
    if cfg["engine"] == "xgboost":
        import xgboost as xgb

        b = xgb.Booster()
        b.load_model(str(bdir / "model.ubj"))
        b.set_param({"device": "cpu"})
        it = metrics["best_iteration"] + 1
        return cfg, lambda x: b.inplace_predict(x, iteration_range=(0, it)).reshape(len(x), -1)
    import lightgbm as lgb

    files = sorted((bdir / "models").glob("[0-9][0-9]_*.txt"))
    by_index = {int(f.name[:2]): lgb.Booster(model_file=str(f)) for f in files}
    return cfg, lambda x: np.column_stack([by_index[j].predict(x) if j in by_index else np.full(len(x), 0.5)
                                           for j in range(schema.N_TARGETS)])


def run_predict(model_dir: str | Path, inputs: list[str | Path], out_csv: str | Path, tta: int = 1,
                cumulative: bool = False, batch_size: int = 32, workers: int = 2, device: str = "auto") -> pd.DataFrame:
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise GzpipeError(f"model folder not found: {model_dir}")
    kind = model_kind(model_dir)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    root = model_dir.parent
    booster = None
    if kind == "backbone":
        members = {model_dir.name: 1.0}
    elif kind == "booster":
        bcfg, booster = _load_booster(model_dir)
        members = {bcfg["backbone"]: 1.0}
    else:
        members = json.loads((model_dir / "weights.json").read_text())["weights"]
    nets = {}
    for name in members:
        if not (root / name / "checkpoints" / ckpt.BEST).exists():
            raise GzpipeError(f"{model_dir.name} needs the backbone {name} at {root / name}, which is not there")
        nets[name] = _Backbone(root / name, dev)
    sizes = {n.image_size for n in nets.values()}
    items = collect_inputs(inputs)
    affines = tta_affines(tta)
    acc = np.zeros((len(items), schema.N_TARGETS))
    ok = np.zeros(len(items), dtype=bool)
    err_col = [""] * len(items)
    for size in sorted(sizes):  # members trained at one size share the decoded views
        group = {k: v for k, v in nets.items() if v.image_size == size}
        dl = DataLoader(_Images(items, size, affines), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, worker_init_fn=dataloader_worker_init, pin_memory=dev.type == "cuda")
        start = 0  # the DataLoader keeps the input order: batch rows are items[start : start + len(ids)]
        with progress_bar(f"predict ({size} px)", total=len(items), unit="img") as bar:
            for views, ids, errs in dl:
                pos = np.arange(start, start + len(ids))
                good = pos[[not e for e in errs]]
                for q, e in zip(pos, errs):
                    if e:
                        err_col[q] = e
                if views is not None:
                    for name, net in group.items():
                        f, p = net.features_and_preds(views)
                        if booster is not None:
                            p = booster(f.astype(np.float32))
                        acc[good] += np.clip(p, 0.0, 1.0) * members[name]
                    ok[good] = True
                bar.advance(len(ids))
                start += len(ids)
    rows = np.where(ok[:, None], acc, np.nan)
    order = [it.id for it in items]
    df = pd.DataFrame(rows, columns=list(schema.TARGET_NAMES))
    df.insert(0, "error", err_col)
    df.insert(0, "id", order)
    if cumulative:
        cum = schema.conditional_to_cumulative(rows)
        for j, c in enumerate(schema.KAGGLE_TARGET_COLUMNS):
            df[c] = cum[:, j]
    with atomic_open(out_csv, "w") as f:
        df.to_csv(f, index=False, float_format="%.6f")
    n_bad = int((df["error"] != "").sum())
    print(f"predicted {len(df) - n_bad} image(s) with {model_dir.name} ({kind}"
          + (f", TTA x{len(affines)}" if len(affines) > 1 else "") + f") -> {out_csv}"
          + (f"; {n_bad} could not be read (see the error column)" if n_bad else ""), flush=True)
    return df
