"""Backbones by name: ``create_model(name, head=..., weights=PATH | pretrained=True)``.

Each entry names the torchvision constructor, the attribute path of its ImageNet classification layer (replaced
by ``Identity``, so the backbone returns its penultimate features), the feature width, and whether channels-last
is the default for it. Adding a sixth backbone is one ``register`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gzpipe.errors import GzpipeError
from gzpipe.models.heads import HEADS, GZHead


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    torchvision_name: str
    classifier: str  # dotted path of the ImageNet Linear layer that the head replaces
    features: int  # width of the penultimate features
    channels_last_cuda: bool  # default memory format on CUDA
    channels_last_cpu: bool = True  # default on the CPU (measured: benchmarks/RESULTS.md, "channels-last")

    def channels_last(self, device_type: str) -> bool:
        return self.channels_last_cuda if device_type == "cuda" else self.channels_last_cpu


BACKBONES: dict[str, BackboneSpec] = {}
ALIASES: dict[str, str] = {}


def register(spec: BackboneSpec, *aliases: str) -> None:
    BACKBONES[spec.name] = spec
    for a in aliases:
        ALIASES[a] = spec.name


register(BackboneSpec("resnet50", "resnet50", "fc", 2048, True))
register(BackboneSpec("efficientnet_v2_s", "efficientnet_v2_s", "classifier.1", 1280, True))
register(BackboneSpec("convnext_base", "convnext_base", "classifier.2", 1024, True))
register(BackboneSpec("swin_v2_s", "swin_v2_s", "head", 768, True))
# A reported benchmark found RegNetY much slower in channels-last on a GPU (not yet re-measured here: no GPU was
# lent); on this CPU channels-last is 18% faster for it, so only the CUDA default is off.
register(BackboneSpec("regnety_8gf", "regnet_y_8gf", "fc", 2016, False, True), "regnet_y_8gf")


def resolve_name(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in BACKBONES:
        raise GzpipeError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} "
                          f"(aliases: {', '.join(ALIASES)})")
    return key


class GZModel(nn.Module):
    """Backbone (classifier removed) + a 30-output head. ``forward`` gives predictions in [0, 1];
    ``features`` the penultimate features that the boosting stage uses."""

    def __init__(self, backbone: nn.Module, head: GZHead, spec: BackboneSpec):
        super().__init__()
        self.backbone, self.head, self.spec = backbone, head, spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.logits(self.backbone(x))


def _set_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = root
    *path, last = dotted.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def create_model(name: str, head: str = "sigmoid", weights: str | Path | None = None,
                 pretrained: bool = False) -> GZModel:
    import torchvision.models as tvm

    spec = BACKBONES[resolve_name(name)]
    if head not in HEADS:
        raise GzpipeError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if weights is not None and pretrained:
        raise GzpipeError("give either --weights PATH or --pretrained, not both")
    tv_weights = None
    if pretrained:
        tv_weights = tvm.get_model_weights(spec.torchvision_name).DEFAULT
    try:
        backbone = tvm.get_model(spec.torchvision_name, weights=tv_weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise GzpipeError(
            f"could not download torchvision's ImageNet weights for {spec.name} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); without internet, download them elsewhere and pass "
            f"--weights PATH"
        ) from None
    if weights is not None:
        load_backbone_weights(backbone, spec, Path(weights))
    _set_module(backbone, spec.classifier, nn.Identity())
    return GZModel(backbone, HEADS[head](spec.features), spec)


def load_backbone_weights(backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
    """Load a local torchvision state dict (its ImageNet head is left out)."""
    if not path.exists():
        raise GzpipeError(f"--weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise GzpipeError(f"cannot read --weights {path} as a torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    head_prefix = spec.classifier + "."
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise GzpipeError(f"--weights {path} does not fit torchvision's {spec.torchvision_name}: {first}") from None
    missing = [k for k in missing if not k.startswith(head_prefix)]
    if missing or unexpected:
        raise GzpipeError(
            f"--weights {path} does not fit torchvision's {spec.torchvision_name}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
