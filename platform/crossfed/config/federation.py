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
    """Central differential privacy (federation/privacy.py): each client's update is clipped, clients are
    Poisson-sampled at rate clients_per_round / clients, Gaussian noise is added to the aggregate and ε is
    accounted. Under it only ε, δ and (if asked) noised global metrics are recorded."""

    enabled: bool = False
    clip_norm: PositiveFloat = Field(1.0, description="L2 bound on each client's update (all shared tensors together)")
    noise_multiplier: float = Field(
        1.0, ge=0.0, description="noise std on the aggregate: noise_multiplier × clip_norm / expected clients"
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="the δ at which ε is reported")
    target_epsilon: PositiveFloat | None = Field(
        None, description="privacy budget: a run whose ε would exceed it refuses to start, or stops before that round"
    )
    metric_noise_multiplier: PositiveFloat | None = Field(
        None, description="release the global validation metrics, noised with this multiplier and counted in ε; "
                          "None: no validation metric is computed under DP"
    )
    metric_clip: PositiveFloat = Field(
        5.0, description="each client's validation metric is clipped to [0, metric_clip] before the noised mean"
    )
    per_client_metrics: bool = Field(
        False, description="UNPROTECTED: send and log every client's metrics, participation counts, traffic and "
                           "timings as without DP; ε does not cover them"
    )

    @model_validator(mode="after")
    def _one_kind_of_metrics(self):
        if self.per_client_metrics and self.metric_noise_multiplier is not None:
            raise ValueError("metric_noise_multiplier: pointless with per_client_metrics, which logs every "
                             "client's metrics without noise; set one of them")
        return self


class FederationConfig(Section):
    rounds: PositiveInt = 5
    local_steps: PositiveInt = 20
    strategy: StrategyConfig = StrategyConfig()
    min_clients: PositiveInt = 1
    clients_per_round: PositiveInt | None = Field(
        None, description="sample this many clients per round (under DP: this many expected, Poisson); None: all"
    )
    shared: list[ParameterGroup] = Field(
        default_factory=lambda: ["backbone", "heads"], min_length=1,
        description="parameter groups averaged across clients; with `adapter`, every experiment goes through "
                    "one common input adapter instead of its own private one",
    )
    validation: UpdateValidationConfig = UpdateValidationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    evaluate_every: PositiveInt = Field(
        1, description="evaluate the global model on every client's validation split every this many rounds "
                       "(rounds N, 2N, ...) and always after the last round; other rounds log no validation metrics",
    )
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
