"""Aggregation strategies, one per file; `build_strategy` picks one from the run configuration."""

from crossfed.config import StrategyConfig
from crossfed.federation.strategies.base import ClientUpdate, State, Strategy
from crossfed.federation.strategies.fedadagrad import FedAdagrad
from crossfed.federation.strategies.fedadam import FedAdam
from crossfed.federation.strategies.fedavg import FedAvg
from crossfed.federation.strategies.fedavgm import FedAvgM
from crossfed.federation.strategies.fedmedian import FedMedian
from crossfed.federation.strategies.fedprox import FedProx
from crossfed.federation.strategies.fedyogi import FedYogi
from crossfed.federation.strategies.trimmed_mean import TrimmedMean

__all__ = ["ClientUpdate", "State", "Strategy", "STRATEGIES", "build_strategy"]

# name in the config -> constructor from the strategy section
STRATEGIES = {
    "fedavg": lambda c: FedAvg(),
    "fedprox": lambda c: FedProx(c.proximal_mu),
    "fedavgm": lambda c: FedAvgM(c.server_lr, c.server_momentum),
    "fedadam": lambda c: FedAdam(c.server_lr, c.beta1, c.beta2, c.tau),
    "fedyogi": lambda c: FedYogi(c.server_lr, c.beta1, c.beta2, c.tau),
    "fedadagrad": lambda c: FedAdagrad(c.server_lr, c.beta1, c.tau),
    "fedmedian": lambda c: FedMedian(),
    "trimmed_mean": lambda c: TrimmedMean(c.trim_fraction),
}


def build_strategy(cfg: StrategyConfig) -> Strategy:
    return STRATEGIES[cfg.name](cfg)
