"""The foundation model: symmetry, padding, sizes, parameter groups, dtype."""

import pytest
import torch

from crossfed.config import ModelConfig
from crossfed.errors import CrossfedError
from crossfed.model import (
    PRESETS, build_model, count_parameters, forward_flops_per_event, model_sizes, parameter_group,
)

from conftest import random_events


def permute_objects(features, types, mask, permutation):
    return features[:, permutation], types[:, permutation], mask[:, permutation]


def test_permuting_objects_permutes_tokens_and_leaves_pooled_output_unchanged(tiny_model, events):
    features, types, mask = events
    permutation = torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(1))
    permuted = permute_objects(features, types, mask, permutation)
    with torch.no_grad():
        tokens = tiny_model.encode(features, types, mask, "cms")
        tokens_permuted = tiny_model.encode(*permuted, "cms")
        pooled = tiny_model.pool(tokens, mask)
        pooled_permuted = tiny_model.pool(tokens_permuted, permuted[2])
        logits = tiny_model.classify(features, types, mask, "cms")
        logits_permuted = tiny_model.classify(*permuted, "cms")
    assert torch.allclose(tokens[:, permutation], tokens_permuted, atol=1e-5)
    assert torch.allclose(pooled, pooled_permuted, atol=1e-5)
    assert torch.allclose(logits, logits_permuted, atol=1e-5)
    assert pooled.abs().sum() > 0 and not torch.allclose(logits[0], logits[1])  # not a constant output


def test_padding_content_does_not_change_outputs(tiny_model, events):
    features, types, mask = events
    garbage_features = features.clone()
    garbage_features[~mask] = torch.tensor([float("nan"), 1e6, -3.0, -5.0, 7.0, float("inf")])
    garbage_types = types.clone()
    garbage_types[~mask] = 5
    with torch.no_grad():
        tokens = tiny_model.encode(features, types, mask, "cms")
        tokens_garbage = tiny_model.encode(garbage_features, garbage_types, mask, "cms")
        logits = tiny_model.classify(features, types, mask, "cms")
        logits_garbage = tiny_model.classify(garbage_features, garbage_types, mask, "cms")
    assert torch.isfinite(tokens_garbage).all()
    assert torch.allclose(tokens, tokens_garbage, atol=1e-6)
    assert torch.allclose(logits, logits_garbage, atol=1e-6)
    assert (tokens_garbage[~mask] == 0).all()


def test_more_padding_columns_do_not_change_outputs(tiny_model, events):
    features, types, mask = events
    padded = (torch.cat([features, torch.zeros(features.shape[0], 4, 6)], 1),
              torch.cat([types, torch.zeros(types.shape[0], 4, dtype=types.dtype)], 1),
              torch.cat([mask, torch.zeros(mask.shape[0], 4, dtype=torch.bool)], 1))
    with torch.no_grad():
        assert torch.allclose(tiny_model.classify(features, types, mask, "cms"),
                              tiny_model.classify(*padded, "cms"), atol=1e-5)


def test_event_without_objects_gives_finite_output(tiny_model, events):
    features, types, mask = events
    mask = mask.clone()
    mask[2] = False
    with torch.no_grad():
        tokens = tiny_model.encode(features, types, mask, "cms")
        logits = tiny_model.classify(features, types, mask, "cms")
    assert torch.isfinite(tokens).all() and torch.isfinite(logits).all()


def test_adapters_are_per_experiment(tiny_model, events):
    with torch.no_grad():
        cms = tiny_model.encode(*events, "cms")
        atlas = tiny_model.encode(*events, "atlas")
    assert not torch.allclose(cms, atlas)
    with pytest.raises(CrossfedError, match="'lhcb'.*known"):
        tiny_model.encode(*events, "lhcb")


def meta_model(preset: str, **overrides):
    with torch.device("meta"):
        model = build_model(ModelConfig(preset=preset, **overrides), ["cms"], ["replaced_object"])
        model.add_classifier()
    return model


def test_preset_sizes():
    assert 10_000_000 <= count_parameters(meta_model("kishimoto-11m")) <= 12_000_000
    assert count_parameters(meta_model("large")) >= 100_000_000
    assert 20_000 <= count_parameters(meta_model("tiny")) <= 100_000
    assert set(PRESETS) == {"tiny", "kishimoto-11m", "large"}


def test_overrides_apply_on_top_of_the_preset():
    sizes = model_sizes(ModelConfig(preset="kishimoto-11m", depth=2, dropout=0.0))
    assert (sizes["dim"], sizes["depth"], sizes["dropout"]) == (384, 2, 0.0)
    model = meta_model("tiny", dim=64, depth=3)
    assert model.dim == 64 and len(model.backbone.blocks) == 3
    with pytest.raises(CrossfedError, match="model.dim .*model.heads"):
        model_sizes(ModelConfig(preset="tiny", dim=50, heads=4))


def test_parameter_groups_cover_every_parameter_and_add_up(tiny_model):
    groups = {parameter_group(name) for name, _ in tiny_model.named_parameters()}
    assert groups == {"adapter", "backbone", "heads", "classifier"}
    assert sum(count_parameters(tiny_model, g) for g in groups) == count_parameters(tiny_model)
    assert parameter_group("adapters.cms.mlp.0.weight") == "adapter"
    assert parameter_group("module.backbone.dummy_token") == "backbone"
    assert parameter_group("heads.replaced_object.0.bias") == "heads"
    names = dict(tiny_model.named_parameters())
    assert "backbone.dummy_token" in names and "heads.masked_regression.2.weight" in names
    with pytest.raises(ValueError):
        parameter_group("optimizer.state")


def test_flops_estimate_scales_with_model_and_objects():
    tiny, kishimoto = meta_model("tiny"), meta_model("kishimoto-11m")
    # Forward ≈ 2 FLOPs per backbone parameter per object, plus attention.
    per_object = forward_flops_per_event(kishimoto, 16) / 16
    assert 2 * count_parameters(kishimoto, "backbone") <= per_object <= 2.2 * count_parameters(kishimoto)
    assert forward_flops_per_event(tiny, 32) > 2 * forward_flops_per_event(tiny, 16) * 0.99


def test_bfloat16_model_accepts_float32_events(tiny_model, events):
    model = tiny_model.to(torch.bfloat16)
    with torch.no_grad():
        logits = model.classify(*events, "cms")
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_normaliser_learns_this_experiments_scale_from_real_objects_only():
    features, types, mask = random_events(n_events=64, n_objects=12, seed=3)
    features[..., 5] = 2 * features[..., 5] - 1  # an ATLAS-like b-tag in [-1, 1]
    features[~mask] = 1e4  # padding must not enter the statistics
    model = build_model(ModelConfig(preset="tiny"), ["atlas"], ["replaced_object"])
    adapter = model.adapters["atlas"].train()
    adapter(features, types, mask)
    adapter.eval()
    from crossfed.model.adapters import engineered_features

    normalised = adapter.normaliser(engineered_features(features), mask)[mask]
    assert torch.allclose(normalised.mean(0), torch.zeros(7), atol=1e-4)
    assert torch.allclose(normalised.std(0), torch.ones(7), atol=0.02)
    assert int(adapter.normaliser.updates) == 1


def test_a_common_adapter_serves_every_experiment_under_one_name(events):
    """Sharing the adapter (`federation.shared` with `adapter`): one `adapters.common.*` for every experiment,
    so two clients' models have the same parameter names and the federation can average them."""
    features, types, mask = events
    cms = build_model(ModelConfig(preset="tiny"), ["cms"], ["replaced_object"], common_adapter=True)
    atlas = build_model(ModelConfig(preset="tiny"), ["atlas"], ["replaced_object"], common_adapter=True)
    names = [name for name, _ in cms.named_parameters() if parameter_group(name) == "adapter"]
    assert names and all(name.startswith("adapters.common.") for name in names)
    assert [name for name, _ in atlas.named_parameters()] == [name for name, _ in cms.named_parameters()]
    atlas.load_state_dict(cms.state_dict())  # the other client's whole model loads as it is
    with torch.no_grad():
        assert torch.equal(cms.encode(features, types, mask, "cms"), atlas.encode(features, types, mask, "atlas"))
    with pytest.raises(CrossfedError, match="experiment 'lhcb' has no input adapter"):
        cms.encode(features, types, mask, "lhcb")
    pooled = build_model(ModelConfig(preset="tiny"), ["cms", "atlas"], ["replaced_object"], common_adapter=True)
    assert list(pooled.adapters) == ["common"]
