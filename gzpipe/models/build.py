"""Building a model by name: ``create_model(name, head=..., weights=PATH | pretrained=True)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gzpipe.errors import GzpipeError
from gzpipe.models.heads import HEADS, CatalogueHeads, GZHead, make_head
from gzpipe.models.registry import BACKBONES, BackboneSpec, resolve_name


class GZModel(nn.Module):
    """Backbone (classifier removed) + a 30-output head. ``forward`` gives predictions in [0, 1];
    ``features`` the penultimate features that the boosting stage uses. ``channels``: the input channels (3, or 1
    for a greyscale encoder)."""

    def __init__(self, backbone: nn.Module, head: GZHead, spec: BackboneSpec, channels: int = 3):
        super().__init__()
        self.backbone, self.head, self.spec, self.channels = backbone, head, spec, channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.activate(self.logits(x, catalogue))

    def logits(self, x: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        f = self.backbone(x)
        return self.head.logits(f, catalogue) if catalogue is not None else self.head.logits(f)

    def catalogue_index(self, names) -> torch.Tensor | None:
        """Head indices for each row's catalogue format (``CatalogueHeads``); None for a model of one head."""
        return self.head.index(names) if isinstance(self.head, CatalogueHeads) else None


def _set_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = root
    *path, last = dotted.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


CHANNELS = (1, 3)


def _build(spec: BackboneSpec, pretrained: bool, channels: int = 3, drop_path: float | None = None) -> nn.Module:
    if channels not in CHANNELS:
        raise GzpipeError(f"input channels must be 1 (greyscale) or 3 (RGB), got {channels}")
    if channels != 3 and not spec.takes_channels:
        raise GzpipeError(f"{spec.name} is built for RGB (3-channel) images; a 1-channel (greyscale) encoder needs "
                          "a timm architecture (--backbone timm:NAME, e.g. Zoobot's greyscale convnext_nano)")
    extra = _drop_path_kwargs(spec, drop_path)
    if spec.build is not None:
        kw = {"channels": channels, **extra} if spec.takes_channels else extra
        if not pretrained:
            return spec.build(**kw)
        if spec.pretrained_build is None:
            raise GzpipeError(f"backbone {spec.name} has no published pretrained weights; use --weights PATH")
        try:
            return spec.pretrained_build(**kw)
        except GzpipeError:
            raise
        except Exception as e:  # noqa: BLE001 - timm's hub: no network, no such weights, ...
            raise GzpipeError(f"could not load the published weights of {spec.name} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''}); without a network, download them "
                              "elsewhere and pass --weights PATH (a file or a Hugging Face folder)") from None
    import torchvision.models as tvm

    tv_weights = tvm.get_model_weights(spec.torchvision_name).DEFAULT if pretrained else None
    try:
        return tvm.get_model(spec.torchvision_name, weights=tv_weights, **extra)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise GzpipeError(
            f"could not download torchvision's ImageNet weights for {spec.name} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); without internet, download them elsewhere and pass "
            f"--weights PATH"
        ) from None


def _drop_path_kwargs(spec: BackboneSpec, drop_path: float | None) -> dict:
    """The constructor keyword that sets stochastic depth; none for None (the architecture's own default: 0 for
    timm's, torchvision's 0.2-0.5 for EfficientNet, ConvNeXt and Swin)."""
    if drop_path is None:
        return {}
    if not 0 <= drop_path < 1:
        raise GzpipeError(f"--drop-path must be in [0, 1), got {drop_path}")
    if spec.drop_path_kwarg is None:
        raise GzpipeError(f"{spec.name} has no stochastic depth (--drop-path); it is offered by timm's architectures "
                          "(timm:NAME) and torchvision's efficientnet_v2_s, convnext_base and swin_v2_s")
    return {spec.drop_path_kwarg: float(drop_path)}


def build_backbone(spec: BackboneSpec, pretrained: bool = False, channels: int = 3,
                   drop_path: float | None = None) -> nn.Module:
    """The network of ``spec`` with its classifier removed (it returns the penultimate features). ``drop_path``:
    the rate of stochastic depth (Huang et al. 2016), None for the architecture's default."""
    try:
        backbone = _build(spec, pretrained, channels, drop_path)
    except TypeError as e:
        if drop_path is None or "drop_path_rate" not in str(e):
            raise
        raise GzpipeError(f"{spec.name} takes no drop_path_rate (timm: {e}); leave out --drop-path") from None
    if spec.removes_classifier:
        _set_module(backbone, spec.classifier, nn.Identity())
    return backbone


def create_model(name: str, head: str = "sigmoid", weights: str | Path | None = None,
                 pretrained: bool = False, zero_init_residual: bool = False, channels: int = 3,
                 heads: list[str] | None = None, drop_path: float | None = None) -> GZModel:
    """``zero_init_residual`` (from random initialisation only: weights that are loaded are left as they are) zeroes
    the scale of the norm layer that ends each residual branch (``BackboneSpec.residual_norms``), so every block
    starts as the identity and the network as a shallow one (Goyal et al. 2017, torchvision's option of the same
    name for ResNets). Trained from scratch on the real sample it lowered resnet50's val MAE by 5%
    (benchmarks/RESULTS.md)."""
    spec = BACKBONES[resolve_name(name)]
    if head not in HEADS:
        raise GzpipeError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if weights is not None and pretrained:
        raise GzpipeError("give either --weights PATH or --pretrained, not both")
    backbone = build_backbone(spec, pretrained, channels, drop_path)
    if weights is not None:
        load_backbone_weights(backbone, spec, Path(weights))
    elif zero_init_residual and not pretrained:
        zero_residual_branches(backbone, spec)
    # ``heads``: the catalogue formats of a head each, the default first (gzpipe train --catalogue-heads)
    return GZModel(backbone, make_head(head, spec.features, heads, heads[0] if heads else None), spec, channels)


def zero_residual_branches(backbone: nn.Module, spec: BackboneSpec) -> int:
    """Zero the weight (and bias) of the norm layer ending each residual branch; returns how many were zeroed."""
    done = 0
    for block in backbone.modules():
        for cls, path in spec.residual_norms:
            if type(block).__name__ != cls or not getattr(block, "use_res_connect", True):
                continue
            norm = block
            for part in path.split("."):
                norm = norm[int(part)] if part.lstrip("-").isdigit() else getattr(norm, part)
            nn.init.zeros_(norm.weight)
            if getattr(norm, "bias", None) is not None:
                nn.init.zeros_(norm.bias)
            done += 1
    return done


def parameter_count(name: str) -> int:
    """Parameters of the whole model (backbone and head), without building its weights twice per report."""
    return _PARAMS.get(name) or _PARAMS.setdefault(name, sum(p.numel() for p in create_model(name).parameters()))


_PARAMS: dict[str, int] = {}


def load_backbone_weights(backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
    """Load what ``--weights`` names into ``backbone`` (its classifier already removed): a file, a Hugging Face
    folder, a Lightning checkpoint, a gzpipe export or run (``gzpipe.models.weights``); anything that does not fit
    is one error naming the keys."""
    from gzpipe.models.weights import for_backbone, locate

    state = for_backbone(locate(path), backbone.state_dict(), spec)
    backbone.load_state_dict(state, strict=True)
