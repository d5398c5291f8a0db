"""30-output heads. Both give predictions in [0, 1].

* ``sigmoid``: one independent sigmoid per answer. Right for Hart16 ``debiased`` fractions, which are corrected
  answer by answer and do not sum to 1 within a task (t01 sums range 0.17-1.80 in the real sample).
* ``softmax``: a softmax over each task's answers, so a task's predictions sum to 1 - right for the conditional
  ``fraction`` / ``weighted_fraction`` targets, which do.

The training default follows the target kind recorded in the shard manifest (debiased -> sigmoid, else softmax).
"""

from __future__ import annotations

import torch
from torch import nn

from gzpipe import schema


class GZHead(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.fc = nn.Linear(in_features, schema.N_TARGETS)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.logits(x))


class SigmoidHead(GZHead):
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class TaskSoftmaxHead(GZHead):
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.softmax(logits[:, s], dim=1) for s in schema.TASK_SLICES.values()], dim=1)


HEADS = {"sigmoid": SigmoidHead, "softmax": TaskSoftmaxHead}


class CatalogueHeads(nn.Module):
    """One 30-output head per catalogue format on one shared encoder (``gzpipe train --catalogue-heads``): two
    catalogues can label the same picture differently (the Hart16 sample calls the galaxies it shares with Kaggle's
    files smooth 0.19 more often), and a single head learns a mix that misses both. Each galaxy is trained and
    scored through its own catalogue's head (its id's prefix: ``kaggle:``, ``hart16:``); a new image goes through
    the head asked for (``gzpipe predict --catalogue``), by default ``default``'s, the catalogue with the most train
    galaxies. As the multi-survey models of the field have a head per survey (Zoobot's GZ Evo).

    ``logits(x, catalogue)``: ``catalogue`` is one head index per row (a LongTensor), or None for the default."""

    def __init__(self, kind: str, in_features: int, formats: list[str], default: str):
        super().__init__()
        self.formats, self.default = list(formats), default
        self.heads = nn.ModuleDict({f: HEADS[kind](in_features) for f in self.formats})

    def index(self, names) -> torch.Tensor:
        """Head indices for catalogue format names (one a row); a name of no head gets the default's."""
        col = {f: k for k, f in enumerate(self.formats)}
        d = col[self.default]
        return torch.tensor([col.get(n, d) for n in names], dtype=torch.long)

    def logits(self, x: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        if catalogue is None:
            return self.heads[self.default].logits(x)
        out = torch.stack([h.logits(x) for h in self.heads.values()])  # heads x N x 30: a linear layer each, cheap
        return out[catalogue.to(x.device), torch.arange(len(x), device=x.device)]

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return self.heads[self.default].activate(logits)  # every head is of one kind

    def forward(self, x: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.logits(x, catalogue))


def make_head(kind: str, in_features: int, formats: list[str] | None = None, default: str | None = None) -> nn.Module:
    """A head of ``kind``; with several catalogue ``formats``, one per format (``CatalogueHeads``)."""
    if formats and len(formats) > 1:
        return CatalogueHeads(kind, in_features, formats, default or formats[0])
    return HEADS[kind](in_features)


def default_head(target_kind: str) -> str:
    return "sigmoid" if target_kind == "debiased" else "softmax"
