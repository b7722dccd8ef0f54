"""crossfed: one foundation model trained across particle-physics experiments by federated learning."""

__version__ = "0.1.0"
