"""FedAvg (McMahan et al. 2017): the mean of the clients' weights, weighted by their example counts."""

from crossfed.federation.strategies.base import State, Strategy, weighted_mean_delta


class FedAvg(Strategy):
    name = "fedavg"

    def combine(self, global_state: State, updates) -> State:
        return weighted_mean_delta(global_state, updates)
