"""The backbone registry (no torch import: the CLI lists its names in `--help` without loading torch).

Each ``BackboneSpec`` names how to build the network (a torchvision constructor, or any ``build`` callable), the
attribute path of its classification layer (replaced by ``Identity``, so the backbone returns its penultimate
features), the feature width, the memory-format defaults and any training defaults of its own (the rest fall back
to the study's, ``gzpipe.train.config.STUDY_DEFAULTS``). Adding a sixth backbone is one ``register`` call: training,
features, boosting, ensembles, reports, predict and ``gzpipe study`` all take their list of backbones from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gzpipe.errors import GzpipeError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    torchvision_name: str | None  # torchvision.models.get_model name; None when ``build`` makes the network
    classifier: str  # dotted path of the classification layer that the head replaces
    features: int  # width of the penultimate features
    channels_last_cuda: bool = True  # default memory format on CUDA
    channels_last_cpu: bool = True  # default on the CPU (measured: benchmarks/RESULTS.md, "channels-last")
    defaults: dict = field(default_factory=dict)  # training defaults of this backbone (lr, batch_size, ...)
    build: Callable[[], object] | None = None  # returns a torch.nn.Module  # a network without pretrained weights, for non-torchvision ones
    # (block class name, dotted path of the norm layer that ends its residual branch), for ``zero_init_residual``;
    # a block whose ``use_res_connect`` is False has no shortcut and is left alone
    residual_norms: tuple[tuple[str, str], ...] = ()
    pretrained_build: Callable[[], object] | None = None  # a network with its published weights (``--pretrained``)
    removes_classifier: bool = True  # False: ``build`` returns the network without its classifier already (timm)
    weights_architecture: str | None = None  # the name a weights folder's config.json gives (timm's architecture)
    on_demand: bool = False  # registered when first named (timm:NAME): not one of the study's default backbones
    takes_channels: bool = False  # ``build(channels=N)`` makes it for N-channel input (timm's in_chans)
    fixed_size: int | None = None  # the one input size it takes (a ViT's position table), else any
    # the constructor's keyword for stochastic depth (``--drop-path``): timm's ``drop_path_rate``, torchvision's
    # ``stochastic_depth_prob``; None where the architecture has none (torchvision's ResNet and RegNet)
    drop_path_kwarg: str | None = None

    def channels_last(self, device_type: str) -> bool:
        return self.channels_last_cuda if device_type == "cuda" else self.channels_last_cpu


BACKBONES: dict[str, BackboneSpec] = {}
ALIASES: dict[str, str] = {}


def register(spec: BackboneSpec, *aliases: str) -> BackboneSpec:
    """Add a backbone (or replace one of the same name); returns the spec."""
    if spec.torchvision_name is None and spec.build is None:
        raise ValueError(f"backbone {spec.name!r} needs a torchvision_name or a build callable")
    BACKBONES[spec.name] = spec
    for a in aliases:
        ALIASES[a] = spec.name
    return spec


def default_backbones() -> list[str]:
    """The backbones a study trains when it names none: the built-in ones and the plug-ins' (not the timm:NAME
    ones registered on demand by an earlier command in the same process)."""
    return [n for n, s in BACKBONES.items() if not s.on_demand]


def unregister(name: str) -> None:
    """Remove a backbone and its aliases (for plug-ins registered for a while, e.g. in tests)."""
    BACKBONES.pop(name, None)
    for a in [a for a, n in ALIASES.items() if n == name]:
        del ALIASES[a]


register(BackboneSpec("resnet50", "resnet50", "fc", 2048, residual_norms=(("Bottleneck", "bn3"),)))
register(BackboneSpec("efficientnet_v2_s", "efficientnet_v2_s", "classifier.1", 1280,
                      drop_path_kwarg="stochastic_depth_prob",
                      residual_norms=(("MBConv", "block.-1.1"), ("FusedMBConv", "block.-1.1"))))
# ConvNeXt's blocks already start near the identity: their layer scale is initialised to 1e-6.
register(BackboneSpec("convnext_base", "convnext_base", "classifier.2", 1024, drop_path_kwarg="stochastic_depth_prob"))
register(BackboneSpec("swin_v2_s", "swin_v2_s", "head", 768, drop_path_kwarg="stochastic_depth_prob",
                      residual_norms=(("SwinTransformerBlockV2", "norm1"), ("SwinTransformerBlockV2", "norm2"))))
# A reported benchmark found RegNetY much slower in channels-last on a GPU (not yet re-measured here: no GPU was
# lent); on this CPU channels-last is 18% faster for it, so only the CUDA default is off.
register(BackboneSpec("regnety_8gf", "regnet_y_8gf", "fc", 2016, channels_last_cuda=False,
                      residual_norms=(("ResBottleneckBlock", "f.c.1"),)), "regnet_y_8gf")


TIMM_HINT = "timm:NAME for any timm architecture (e.g. timm:convnext_nano)"


def resolve_name(name: str) -> str:
    key = ALIASES.get(name.strip(), name.strip()) if isinstance(name, str) else name
    if key not in BACKBONES and isinstance(key, str) and key.startswith("timm:"):
        from gzpipe.models.timm_backbones import register_timm  # imports timm: only for timm names

        return register_timm(key).name
    if key not in BACKBONES:
        raise GzpipeError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
                          + (f" (aliases: {', '.join(ALIASES)})" if ALIASES else "") + f", or {TIMM_HINT}")
    return key


def parse_backbones(text: str | list[str] | None, option: str = "--backbones") -> list[str] | None:
    """A comma list (or a list) of backbone names: spaces stripped, aliases resolved, unknown names refused."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise GzpipeError(f"{option} is empty; give backbone names separated by commas")
    out = []
    for n in names:
        try:
            r = resolve_name(n)
        except GzpipeError as e:
            raise GzpipeError(f"{option}: {e}") from None
        if r not in out:
            out.append(r)
    return out
