"""FedProx (Li et al. 2020): FedAvg aggregation; clients add (mu/2)·||w − w_global||² to their loss."""

from crossfed.federation.strategies.fedavg import FedAvg


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, proximal_mu: float):
        self.proximal_mu = proximal_mu

    def client_options(self) -> dict:
        return {"proximal_mu": self.proximal_mu}
