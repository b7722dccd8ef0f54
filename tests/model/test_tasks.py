"""Pre-training tasks: losses, gradients, no information leak, learning, the registry."""

import pytest
import torch
import torch.nn.functional as F

from crossfed.config import ModelConfig
from crossfed.data.events import ObjectType
from crossfed.errors import CrossfedError
from crossfed.model import build_model
from crossfed.tasks import TASKS, build_tasks, pretraining_loss
from crossfed.tasks.replaced_object import CLASS_OF_TYPE, choose_replaced


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_each_task_loss_is_finite_and_reaches_backbone_and_adapter(task_name, events):
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), ["cms"], [task_name]).train()
    [(task, _)] = build_tasks({task_name: 1.0})
    loss, metrics = task.loss(model, *events, "cms", torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert metrics["loss"] == pytest.approx(loss.item()) and all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    for name in ("backbone.dummy_token", "backbone.blocks.0.attn.qkv.weight", "adapters.cms.mlp.0.weight",
                 "adapters.cms.type_embedding.weight", f"heads.{task_name}.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_pretraining_loss_weights_the_tasks(events):
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), ["cms"], list(TASKS)).eval()
    tasks = build_tasks({"replaced_object": 1.0, "masked_regression": 0.5})
    total, metrics = pretraining_loss(model, tasks, *events, "cms", torch.Generator().manual_seed(0))
    expected = metrics["replaced_object/loss"] + 0.5 * metrics["masked_regression/loss"]
    assert total.item() == pytest.approx(expected, rel=1e-5) and metrics["loss"] == pytest.approx(expected, rel=1e-5)
    _, lazy = pretraining_loss(model, tasks, *events, "cms", torch.Generator().manual_seed(0), sync=False)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in lazy.values())


def test_replaced_object_is_chosen_uniformly_among_real_non_photon_objects():
    types = torch.tensor([[ObjectType.MET, ObjectType.PHOTON, ObjectType.MUON, ObjectType.BJET, ObjectType.JET],
                          [ObjectType.PHOTON, ObjectType.PHOTON, 0, 0, 0]], dtype=torch.int8)
    mask = torch.tensor([[True, True, True, True, False], [True, True, False, False, False]])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(2000):
        index, target, has_choice = choose_replaced(types, mask, generator)
        counts[index[0]] += 1
        assert has_choice.tolist() == [True, False]
        assert target[0] == CLASS_OF_TYPE[types[0, index[0]].long()]
    assert counts[1] == 0 and counts[4] == 0  # the photon and the padding are never chosen
    assert torch.allclose(counts[[0, 2, 3]] / 2000, torch.full((3,), 1 / 3), atol=0.04)


def test_hidden_object_features_and_type_cannot_leak(tiny_model, events):
    features, types, mask = events
    index, _, _ = choose_replaced(types, mask, torch.Generator().manual_seed(0))
    replaced = F.one_hot(index, mask.shape[1]).bool()
    changed_features, changed_types = features.clone(), types.clone()
    changed_features[replaced] = torch.tensor([500.0, 2.0, 1.0, 1900.0, -1.0, 0.9])
    changed_types[replaced] = ObjectType.TAU
    with torch.no_grad():
        tokens = tiny_model.encode(features, types, mask, "cms", replaced=replaced)
        tokens_changed = tiny_model.encode(changed_features, changed_types, mask, "cms", replaced=replaced)
        visible = tiny_model.encode(features, types, mask, "cms")
        visible_changed = tiny_model.encode(changed_features, changed_types, mask, "cms")
    assert torch.equal(tokens, tokens_changed)
    logits = tiny_model.heads["replaced_object"](tokens[replaced])
    logits_changed = tiny_model.heads["replaced_object"](tokens_changed[replaced])
    assert torch.equal(logits, logits_changed)
    assert not torch.allclose(visible, visible_changed)  # the same change is seen when not replaced


def learnable_events(n_events: int, seed: int):
    """Every event holds MET, a lepton, a tau, two b-jets, three light jets (shuffled, padded to 10).

    The hidden object's class follows from which type is missing among the visible ones, so a model
    that counts the context can drive the loss towards zero; the class prior alone gives ~1.49 nats.
    """
    g = torch.Generator().manual_seed(seed)
    composition = torch.tensor([ObjectType.MET, ObjectType.MUON, ObjectType.TAU, ObjectType.BJET, ObjectType.BJET,
                                ObjectType.JET, ObjectType.JET, ObjectType.JET, 0, 0], dtype=torch.int8)
    order = torch.cat([torch.randperm(8, generator=g) for _ in range(n_events)]).view(n_events, 8)
    order = torch.cat([order, torch.tensor([8, 9]).expand(n_events, 2)], 1)
    types = composition[order]
    mask = torch.arange(10)[None].expand(n_events, 10) < 10
    mask = mask & (order < 8)
    pt = 20 + 80 * torch.rand(n_events, 10, generator=g)
    eta = 4 * torch.rand(n_events, 10, generator=g) - 2
    phi = (2 * torch.rand(n_events, 10, generator=g) - 1) * torch.pi
    charge = torch.randint(-1, 2, (n_events, 10), generator=g).float()
    btag = torch.rand(n_events, 10, generator=g)
    features = torch.stack([pt, eta, phi, pt * torch.cosh(eta), charge, btag], -1)
    return features, types, mask


def test_tiny_model_learns_the_replaced_object_task():
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), ["cms"], ["replaced_object"]).train()
    tasks = build_tasks({"replaced_object": 1.0})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    train = learnable_events(1024, seed=1)
    losses = []
    for step in range(80):
        batch = slice((step * 128) % 1024, (step * 128) % 1024 + 128)
        loss, _ = pretraining_loss(model, tasks, *(t[batch] for t in train), "cms", generator, sync=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        _, metrics = pretraining_loss(model, tasks, *learnable_events(1024, seed=2), "cms",
                                      torch.Generator().manual_seed(5))
    assert sum(losses[:3]) / 3 > 1.3  # starts near ln 5 = 1.61
    assert metrics["replaced_object/loss"] < 0.3, metrics  # held-out events, well below the 1.49 prior
    assert metrics["replaced_object/accuracy"] > 0.9, metrics


def test_unknown_task_is_a_user_error_naming_the_known_ones():
    with pytest.raises(CrossfedError, match="'replaced_objekt'.*replaced_object, masked_regression"):
        build_tasks({"replaced_objekt": 1.0})
    with pytest.raises(CrossfedError, match="'nope'"):
        build_model(ModelConfig(), ["cms"], ["nope"])
