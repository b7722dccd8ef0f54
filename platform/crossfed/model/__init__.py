"""The foundation model: private per-experiment input adapters, a shared transformer backbone, shared
pre-training heads (one per task) and an optional fine-tuning classifier.

Parameter names start with the part they belong to — `adapters.<experiment>.`, `backbone.`,
`heads.<task>.`, `classifier.` — and `parameter_group(name)` maps a name to its group; federation
shares groups by these names. With `common_adapter` (a run whose `federation.shared` includes `adapter`)
there is one input adapter, `adapters.common.`, that every experiment's objects go through: the same
names in every client, so the federation can average it like the backbone.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from crossfed.config.model import PRESETS, ModelConfig, model_sizes
from crossfed.errors import CrossfedError
from crossfed.model.adapters import InputAdapter
from crossfed.model.transformer import Backbone

__all__ = [
    "PRESETS", "FoundationModel", "build_model", "classifier_head", "count_parameters", "forward_flops_per_event",
    "model_sizes", "parameter_group",
]

PARAMETER_GROUPS = {"adapters": "adapter", "backbone": "backbone", "heads": "heads", "classifier": "classifier"}
COMMON_ADAPTER = "common"  # the one adapter's name when every experiment shares it


class FoundationModel(nn.Module):
    def __init__(self, experiments: list[str], heads: dict[str, nn.Module], *, dim: int, depth: int,
                 heads_per_block: int, mlp_ratio: float, dropout: float, common_adapter: bool = False):
        super().__init__()
        self.dim = dim
        self.experiments = list(experiments)
        self.common_adapter = common_adapter
        names = [COMMON_ADAPTER] if common_adapter else self.experiments
        # The backbone's initial weights depend on the torch seed alone and each adapter's on the seed and its
        # name, so local, federated and centralized models of one seed start from the same weights.
        backbone = Backbone(dim, depth, heads_per_block, mlp_ratio, dropout)
        self.adapters = nn.ModuleDict({name: _seeded_adapter(dim, name) for name in names})
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.classifier: nn.Module | None = None

    def add_classifier(self, num_classes: int = 2) -> nn.Module:
        """Attach the fine-tuning head on the pooled event representation (on the model's device)."""
        reference = self.backbone.norm.weight
        self.classifier = classifier_head(self.dim, num_classes).to(device=reference.device, dtype=reference.dtype)
        return self.classifier

    def adapter_name(self, experiment: str) -> str:
        """The adapter `experiment`'s objects go through: its own, or the common one."""
        if experiment not in self.experiments:
            raise CrossfedError(f"experiment {experiment!r} has no input adapter; known: {sorted(self.experiments)}")
        return COMMON_ADAPTER if self.common_adapter else experiment

    def encode(self, features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, experiment: str,
               replaced: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, N, D]; objects where `replaced` [B, N] is True are shown as the dummy object only."""
        tokens = self.adapters[self.adapter_name(experiment)](features, types, mask)
        return self.backbone(tokens, mask, replaced)

    forward = encode

    @staticmethod
    def pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean over real objects: [B, N, D] -> [B, D], invariant to object order."""
        weights = mask[..., None].to(tokens.dtype)
        return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def classify(self, features: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, experiment: str) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("no classifier: call model.add_classifier() first")
        return self.classifier(self.pool(self.encode(features, types, mask, experiment), mask))


def _seeded_adapter(dim: int, experiment: str) -> InputAdapter:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(experiment.encode())) % 2**63)
        return InputAdapter(dim)


def classifier_head(dim: int, num_classes: int = 2) -> nn.Module:
    """The fine-tuning head on a pooled event representation of width `dim`."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_classes))


def build_model(cfg: ModelConfig, experiments: list[str], tasks: list[str], *,
                common_adapter: bool = False) -> FoundationModel:
    """One adapter per experiment (or one `common_adapter` for all), the backbone, and one head per
    pre-training task (by registry name)."""
    from crossfed.tasks import get_task  # tasks use the model; import here to keep the layers acyclic

    if not experiments:
        raise CrossfedError("build_model: at least one experiment is needed")
    for name in experiments:
        if not name or "." in name:
            raise CrossfedError(f"experiment name {name!r}: must be non-empty and contain no '.'")
    sizes = model_sizes(cfg)
    heads = {name: get_task(name).head(sizes["dim"]) for name in tasks}
    return FoundationModel(list(experiments), heads, dim=sizes["dim"], depth=sizes["depth"],
                           heads_per_block=sizes["heads"], mlp_ratio=sizes["mlp_ratio"], dropout=sizes["dropout"],
                           common_adapter=common_adapter)


def parameter_group(name: str) -> str:
    """'adapter' | 'backbone' | 'heads' | 'classifier' for a parameter (or buffer) name.

    A leading 'module.' (DeepSpeed / DDP wrappers) is ignored.
    """
    first = name.removeprefix("module.").split(".", 1)[0]
    if first not in PARAMETER_GROUPS:
        raise ValueError(f"parameter {name!r} belongs to no group ({', '.join(PARAMETER_GROUPS)})")
    return PARAMETER_GROUPS[first]


def count_parameters(model: nn.Module, group: str | None = None) -> int:
    """Number of parameters, all or those of one group; works on meta-device models too."""
    return sum(p.numel() for name, p in model.named_parameters() if group is None or parameter_group(name) == group)


def forward_flops_per_event(model: FoundationModel, num_objects: int = 16) -> int:
    """Estimated forward FLOPs of encoding one event of `num_objects` objects (one adapter + backbone).

    Every linear layer costs 2·in·out per token; attention adds 2·N·d for scores and 2·N·d for the
    weighted sum per token and layer. Norms, activations and the small heads are left out. Training
    costs about 3× this (forward + backward).
    """
    adapter = next(iter(model.adapters.values()))
    linear = sum(2 * m.in_features * m.out_features
                 for part in (adapter, model.backbone) for m in part.modules() if isinstance(m, nn.Linear))
    attention = 4 * num_objects * model.dim * len(model.backbone.blocks)
    return num_objects * (linear + attention)
