"""Small random events shared by the model and task tests."""

import pytest
import torch

from crossfed.config import ModelConfig
from crossfed.data.events import ObjectType
from crossfed.model import build_model


def random_events(n_events: int = 6, n_objects: int = 10, seed: int = 0):
    """Physically shaped random events: MET first, then leptons and jets; a varying number of real objects."""
    g = torch.Generator().manual_seed(seed)
    pt = 20 + 100 * torch.rand(n_events, n_objects, generator=g)
    eta = 4 * torch.rand(n_events, n_objects, generator=g) - 2
    phi = (2 * torch.rand(n_events, n_objects, generator=g) - 1) * torch.pi
    energy = pt * torch.cosh(eta)
    charge = torch.randint(-1, 2, (n_events, n_objects), generator=g).float()
    btag = torch.rand(n_events, n_objects, generator=g)
    features = torch.stack([pt, eta, phi, energy, charge, btag], dim=-1)
    types = torch.randint(0, len(ObjectType), (n_events, n_objects), generator=g).to(torch.int8)
    types[:, 0] = ObjectType.MET
    n_real = torch.randint(3, n_objects + 1, (n_events,), generator=g)
    mask = torch.arange(n_objects)[None, :] < n_real[:, None]
    features[~mask] = 0.0
    types[~mask] = 0
    return features, types, mask


@pytest.fixture
def events():
    return random_events()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), ["cms", "atlas"], ["replaced_object", "masked_regression"])
    model.add_classifier(num_classes=2)
    return model.eval()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tiny models gain nothing from intra-op threads, and on a shared 2-core CI machine the
    threads' spin-waiting makes a step ~10× slower; restore the setting for the rest of the suite."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
