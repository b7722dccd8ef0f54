"""Downstream fine-tuning: how the pre-trained backbone is used and on how many labelled events."""

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from crossfed.config.base import Section


class FinetuneConfig(Section):
    labelled_events: list[PositiveInt] = Field(
        default_factory=lambda: [100, 1000, 10000], min_length=1, description="data-efficiency ladder"
    )
    mode: Literal["frozen", "full", "lower_lr"] = Field(
        "lower_lr", description="frozen: only the classifier learns, on the pre-trained encoder's output; "
                                "full: everything; lower_lr: the backbone at lr × backbone_lr_factor")
    backbone_lr_factor: PositiveFloat = Field(0.1, description="backbone lr = lr × this, in lower_lr mode")
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 256
    epochs: PositiveInt = 10
    max_steps: PositiveInt | None = None
    checkpoint: str | None = Field(
        None, description="pre-trained model to start from, as `finetune -c` takes it (a run id, models:/NAME/VERSION, "
                          "runs:/..., a file); None: from scratch")
