"""Replaced-object prediction (KEK study, the default pre-training task).

In each event one real object is chosen uniformly and its input token is replaced by the learned dummy
object (the model sees neither its features nor its type); the head predicts its class from the dummy's
output token: lepton (e/μ), tau, b-jet, light jet or MET.

Photons are not one of the five classes, so they are never chosen; they stay visible as context.
Events with nothing eligible (only photons, or empty) are left out of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossfed.data.events import ObjectType
from crossfed.tasks.base import Task, masked_mean, uniform

CLASSES = ("lepton", "tau", "b-jet", "light jet", "MET")
NOT_CHOSEN = -1
_CLASS_OF_TYPE = {
    ObjectType.ELECTRON: 0, ObjectType.MUON: 0, ObjectType.TAU: 1, ObjectType.PHOTON: NOT_CHOSEN,
    ObjectType.JET: 3, ObjectType.BJET: 2, ObjectType.MET: 4,
}
CLASS_OF_TYPE = torch.tensor([_CLASS_OF_TYPE[t] for t in ObjectType])


def choose_replaced(types: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None):
    """Per event: index of one eligible object chosen uniformly, its class, and whether one exists."""
    classes = CLASS_OF_TYPE.to(types.device)[types.long()]
    eligible = mask & (classes != NOT_CHOSEN)
    scores = torch.where(eligible, uniform(tuple(mask.shape), generator, mask.device), -1.0)
    index = scores.argmax(dim=1)
    target = classes.gather(1, index[:, None]).squeeze(1).clamp_min(0)
    return index, target, eligible.any(dim=1)


class ReplacedObjectTask(Task):
    name = "replaced_object"
    metrics = ("loss", "accuracy")

    def head(self, dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, len(CLASSES)))

    def loss_terms(self, model, features, types, mask, experiment, generator):
        index, target, has_choice = choose_replaced(types, mask, generator)
        replaced = F.one_hot(index, mask.shape[1]).bool() & has_choice[:, None]
        tokens = model.encode(features, types, mask, experiment, replaced=replaced)
        chosen = tokens.gather(1, index[:, None, None].expand(-1, 1, tokens.shape[-1])).squeeze(1)
        logits = model.heads[self.name](chosen).float()
        loss = masked_mean(F.cross_entropy(logits, target, reduction="none"), has_choice)
        accuracy = masked_mean((logits.argmax(1) == target).float(), has_choice)
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}
