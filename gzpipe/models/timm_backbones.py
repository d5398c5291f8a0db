"""Any timm architecture as a backbone: ``--backbone timm:NAME`` (``timm:convnext_nano``, ``timm:resnet18`` ...).

The first time a ``timm:`` name is resolved (``gzpipe.models.registry.resolve_name``) it is registered like the five
built-in backbones: built without weights by ``timm.create_model(NAME, num_classes=0)`` (timm removes its classifier,
so the network returns pooled penultimate features), its feature width read from a copy built on the ``meta`` device
(no memory, no weights), its classifier's name taken from timm's ``pretrained_cfg`` (a checkpoint's classifier keys
are left out when ``--weights`` loads it). ``--pretrained`` uses timm's own loading (its hub, so a network), and
``--weights`` reads a local file or a Hugging Face folder (``gzpipe.models.weights``).

Zoobot's encoders (pretrained on ~820k galaxies, "Scaling Laws for Galaxy Images", 2024) are timm architectures
published on the Hugging Face hub as ``mwalmsley/zoobot-encoder-<arch>`` (convnext_nano, convnext_small,
convnext_base, greyscale-convnext_nano ...; the full list is in Zoobot's docs, "Pretrained Models"). Download one
where there is a network (``huggingface-cli download mwalmsley/zoobot-encoder-convnext_nano --local-dir zoobot-nano``)
and train from it anywhere: ``gzpipe train --backbone timm:convnext_nano --weights zoobot-nano``.
"""

from __future__ import annotations

import difflib

from gzpipe.errors import GzpipeError

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise GzpipeError("timm is not installed: `pip install timm` (a dependency of gzpipe) to use timm: "
                          "backbones") from None
    return timm


def architecture(name: str) -> str:
    """``timm:convnext_nano`` -> ``convnext_nano``."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def register_timm(name: str):
    """Register ``timm:ARCH`` (checked against timm's list of architectures) and return its spec."""
    import torch

    from gzpipe.models.registry import BackboneSpec, register

    timm = _timm()
    arch = architecture(name)
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4)
        raise GzpipeError(f"unknown timm architecture {arch!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                   else "; `timm.list_models()` lists them"))
    try:
        with torch.device("meta"):  # the width without building a single weight
            probe = timm.create_model(arch, pretrained=False, num_classes=0)
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on the meta device: build it for real
        probe = timm.create_model(arch, pretrained=False, num_classes=0)
    width = pooled_width(probe)
    cfg = getattr(probe, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") or "head"
    spec = BackboneSpec(
        PREFIX + arch, None, classifier, width,
        build=lambda channels=3, **kw: timm.create_model(arch, pretrained=False, num_classes=0, in_chans=channels,
                                                         **kw),
        pretrained_build=lambda channels=3, **kw: timm.create_model(arch, pretrained=True, num_classes=0,
                                                                    in_chans=channels, **kw),
        removes_classifier=False, weights_architecture=arch, on_demand=True, takes_channels=True,
        fixed_size=_fixed_size(cfg), drop_path_kwarg="drop_path_rate")
    return register(spec)


def pooled_width(model) -> int:
    """The width of what the network returns with ``num_classes=0``: one forward pass on the meta device (no memory,
    no arithmetic). ``num_features`` is not always it: mobilenetv3's pooled features go through a 1x1 conv to
    ``head_hidden_size`` (1,024 for mobilenetv3_small_050, whose num_features is 288)."""
    import torch

    size = tuple((getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224))
    try:
        with torch.device("meta"):
            out = model.to("meta")(torch.zeros((1, *size), device="meta"))
        return int(out.shape[-1])
    except Exception:  # noqa: BLE001 - an op without a meta kernel: what timm says the pooled width is
        return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _fixed_size(cfg: dict) -> int | None:
    """The one input size a network takes (ViTs and Swins with absolute position tables), else None."""
    size = cfg.get("input_size")
    return int(size[-1]) if cfg.get("fixed_input_size") and size else None
