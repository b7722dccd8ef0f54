"""Split determinism, shard disjointness, and the physics invariants of the augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossfed.config import AugmentConfig
from crossfed.data.augment import augment, wrap_phi
from crossfed.data.events import ENERGY, ETA, PHI, PT, ObjectType as T
from crossfed.data.split import shard, split_indices


def test_split_is_deterministic_disjoint_and_complete():
    train, val, test = split_indices(1001, 0.1, 0.2, seed=7)
    assert (len(val), len(test), len(train)) == (100, 200, 701)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(1001))
    again = split_indices(1001, 0.1, 0.2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(split_indices(1001, 0.1, 0.2, seed=8)[0], train)


@pytest.mark.parametrize("n, world_size", [(10, 3), (7, 7), (2, 4)])
def test_shards_are_disjoint_covering_and_balanced(n, world_size):
    indices = np.random.default_rng(0).permutation(n)
    shards = [shard(indices, rank, world_size) for rank in range(world_size)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(indices.tolist())
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard(indices, world_size, world_size)


def _events(n_events=64, n_objects=10, seed=0):
    """Random events: MET first, then massive objects; the last 3 slots of each event are padding."""
    g = torch.Generator().manual_seed(seed)
    pt = 5 + 100 * torch.rand(n_events, n_objects, generator=g, dtype=torch.float64)
    eta = 5 * torch.rand(n_events, n_objects, generator=g, dtype=torch.float64) - 2.5
    phi = wrap_phi(7 * torch.rand(n_events, n_objects, generator=g, dtype=torch.float64))
    mass = 20 * torch.rand(n_events, n_objects, generator=g, dtype=torch.float64)
    types = torch.randint(0, 6, (n_events, n_objects), generator=g)
    types[:, 0] = int(T.MET)
    eta[:, 0], mass[:, 0] = 0.0, 0.0
    energy = torch.sqrt((pt * torch.cosh(eta)) ** 2 + mass**2)
    features = torch.stack([pt, eta, phi, energy, torch.ones_like(pt), torch.rand_like(pt)], dim=-1)
    mask = torch.ones(n_events, n_objects, dtype=torch.bool)
    mask[:, -3:] = False
    features[~mask] = 0.0
    types[~mask] = 0
    return features.float(), types, mask


def _four_vectors(f):
    f = f.double()
    pt, eta, phi, energy = f[..., PT], f[..., ETA], f[..., PHI], f[..., ENERGY]
    return energy, pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)


def _pair_mass(f, i, j):
    e, px, py, pz = (a[:, i] + a[:, j] for a in _four_vectors(f))
    return torch.sqrt(torch.clamp(e**2 - px**2 - py**2 - pz**2, min=0))


def _visible_transverse_mass(f, visible):
    """sqrt(ET^2 - pT^2) of the visible system: invariant under z boosts and rotations."""
    e, px, py, pz = (torch.where(visible, a, 0).sum(1) for a in _four_vectors(f))
    return torch.sqrt(e**2 - pz**2 - px**2 - py**2 + px**2 + py**2)


def _delta_r(f, i, j):
    dphi = wrap_phi(f[:, i, PHI].double() - f[:, j, PHI].double())
    return torch.hypot(f[:, i, ETA].double() - f[:, j, ETA].double(), dphi)


def test_boost_keeps_pt_and_masses_and_moves_rapidity():
    features, types, mask = _events()
    cfg = AugmentConfig(phi_rotation=False, z_flip=False, boost=True, max_rapidity_shift=1.0)
    out = augment(features, types, mask, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(out[..., PT], features[..., PT]) and torch.equal(out[..., PHI], features[..., PHI])
    assert not torch.allclose(out[:, 1:7, ETA], features[:, 1:7, ETA])
    torch.testing.assert_close(_pair_mass(out, 1, 2), _pair_mass(features, 1, 2), rtol=1e-4, atol=1e-3)
    visible = mask & (types != int(T.MET))
    torch.testing.assert_close(_visible_transverse_mass(out, visible), _visible_transverse_mass(features, visible),
                               rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out[:, 0], features[:, 0])  # MET untouched by the boost
    assert torch.equal(out[~mask], features[~mask])  # padding untouched


def test_rotation_keeps_delta_r_and_wraps_phi():
    features, types, mask = _events()
    cfg = AugmentConfig(phi_rotation=True, z_flip=False, boost=False)
    out = augment(features, types, mask, cfg, torch.Generator().manual_seed(2))
    assert out[..., PHI].max() <= math.pi and out[..., PHI].min() > -math.pi
    assert not torch.allclose(out[..., PHI], features[..., PHI])
    torch.testing.assert_close(_delta_r(out, 1, 2), _delta_r(features, 1, 2), rtol=1e-4, atol=1e-4)
    # MET rotates with the event: its angle to the leading object is kept
    torch.testing.assert_close(wrap_phi(out[:, 0, PHI] - out[:, 1, PHI]),
                               wrap_phi(features[:, 0, PHI] - features[:, 1, PHI]), rtol=1e-4, atol=1e-4)
    assert torch.equal(out[~mask], features[~mask])


def test_flip_mirrors_eta_per_event_and_is_reproducible():
    features, types, mask = _events(n_events=200)
    cfg = AugmentConfig(phi_rotation=False, z_flip=True, boost=False)
    out = augment(features, types, mask, cfg, torch.Generator().manual_seed(3))
    flipped = (out[:, 1, ETA] == -features[:, 1, ETA])
    assert 50 < flipped.sum() < 150  # p = 0.5 per event
    assert torch.equal(out[flipped][:, 1:7, ETA], -features[flipped][:, 1:7, ETA])  # whole event flips
    assert torch.equal(out[~flipped], features[~flipped])
    again = augment(features, types, mask, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_all_augmentations_together_keep_invariants():
    features, types, mask = _events()
    out = augment(features, types, mask, AugmentConfig(), torch.Generator().manual_seed(4))
    assert out.dtype == features.dtype and torch.equal(out[..., PT], features[..., PT])
    torch.testing.assert_close(_pair_mass(out, 2, 3), _pair_mass(features, 2, 3), rtol=1e-4, atol=1e-3)
    # ΔR in (η, φ) is not boost-invariant for massive objects; the azimuthal opening angle is
    dphi = lambda f: wrap_phi(f[:, 2, PHI].double() - f[:, 3, PHI].double()).abs()  # noqa: E731
    torch.testing.assert_close(dphi(out), dphi(features), rtol=1e-4, atol=1e-4)
    assert torch.equal(out[~mask], features[~mask])
