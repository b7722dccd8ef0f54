"""How the federation runs: rounds, aggregation strategy, what is shared, safety and privacy."""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from crossfed.config.base import Section

StrategyName = Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "trimmed_mean"]
ParameterGroup = Literal["backbone", "heads", "adapter"]


class StrategyConfig(Section):
    name: StrategyName = "fedavg"
    server_lr: PositiveFloat = Field(1.0, description="server step size (FedAvgM, FedAdam, FedYogi, FedAdagrad)")
    server_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="FedAvgM")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="FedAdam/FedYogi")
    beta2: float = Field(0.99, ge=0.0, lt=1.0, description="FedAdam/FedYogi")
    tau: PositiveFloat = Field(1e-3, description="adaptivity (FedAdam, FedYogi, FedAdagrad)")
    proximal_mu: float = Field(0.01, ge=0.0, description="FedProx proximal term weight")
    trim_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="trimmed mean: fraction cut at each end")


class UpdateValidationConfig(Section):
    max_norm_ratio: PositiveFloat = Field(
        10.0, description="reject an update whose norm exceeds this multiple of the others' median"
    )


class PrivacyConfig(Section):
    """Central differential privacy: clip each client's update, add Gaussian noise to the aggregate."""

    enabled: bool = False
    clip_norm: PositiveFloat = 1.0
    noise_multiplier: float = Field(1.0, ge=0.0)
    delta: float = Field(1e-5, gt=0.0, lt=1.0)


class FederationConfig(Section):
    rounds: PositiveInt = 5
    local_steps: PositiveInt = 20
    strategy: StrategyConfig = StrategyConfig()
    min_clients: PositiveInt = 1
    clients_per_round: PositiveInt | None = Field(None, description="sample this many clients per round; None: all")
    shared: list[ParameterGroup] = Field(
        default_factory=lambda: ["backbone", "heads"], min_length=1,
        description="parameter groups averaged across clients; with `adapter`, every experiment goes through "
                    "one common input adapter instead of its own private one",
    )
    validation: UpdateValidationConfig = UpdateValidationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    round_timeout_s: PositiveFloat = Field(1800.0, description="stragglers slower than this are dropped")
    max_round_retries: NonNegativeInt = 1

    @property
    def common_adapter(self) -> bool:
        """Sharing the adapter means one input adapter for every experiment (the model's shape follows)."""
        return "adapter" in self.shared

    @model_validator(mode="after")
    def _privacy_needs_a_mean(self):
        if self.privacy.enabled and self.strategy.name in ("fedmedian", "trimmed_mean"):
            raise ValueError(
                f"privacy.enabled needs a mean-based strategy: {self.strategy.name} has no bounded sensitivity"
            )
        return self
