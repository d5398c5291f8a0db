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


def default_head(target_kind: str) -> str:
    return "sigmoid" if target_kind == "debiased" else "softmax"
