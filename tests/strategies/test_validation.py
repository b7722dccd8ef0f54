"""Update screening: broken and outlier updates are rejected with a reason, the rest go on."""

import numpy as np
import pytest

from crossfed.config.federation import UpdateValidationConfig
from crossfed.federation.strategies import ClientUpdate
from crossfed.federation.validation import validate_updates

GLOBAL = {"w": np.zeros(4, np.float32), "b": np.zeros(1, np.float32)}


def update(client, w, b=0.0, examples=100):
    return ClientUpdate(client, {"w": np.asarray(w, np.float32), "b": np.array([b], np.float32)}, examples)


def test_rejects_non_finite_broken_and_outlier_updates_and_keeps_the_rest():
    updates = [
        update("cms", [1, 0, 0, 0]),  # norm 1
        update("atlas", [0, 1.2, 0, 0]),  # norm 1.2
        update("lhcb", [0, 0, 0.9, 0]),  # norm 0.9
        update("nan", [1, np.nan, 0, 0]),
        update("inf", [1, 0, 0, 0], b=np.inf),
        update("outlier", [0, 0, 0, 50]),  # 50 > 10 × median(1, 1.2, 0.9) = 10
        update("wide", np.ones(5)),
        ClientUpdate("nokey", {"w": np.zeros(4, np.float32)}, 10),
        update("empty", [0.1, 0, 0, 0], examples=0),
    ]
    accepted, rejected = validate_updates(GLOBAL, updates, UpdateValidationConfig(max_norm_ratio=10))
    assert [u.client for u in accepted] == ["cms", "atlas", "lhcb"]
    reasons = dict(rejected)
    assert set(reasons) == {"nan", "inf", "outlier", "wide", "nokey", "empty"}
    assert "non-finite" in reasons["nan"] and "'w'" in reasons["nan"]
    assert "non-finite" in reasons["inf"] and "'b'" in reasons["inf"]
    assert "norm 50" in reasons["outlier"]
    assert "shape" in reasons["wide"] and "missing" in reasons["nokey"]


def test_a_large_but_not_extreme_update_is_kept():
    updates = [update("a", [1, 0, 0, 0]), update("b", [0, 1, 0, 0]), update("c", [0, 0, 9, 0])]
    accepted, rejected = validate_updates(GLOBAL, updates, UpdateValidationConfig(max_norm_ratio=10))
    assert len(accepted) == 3 and rejected == []


def test_two_updates_compare_to_each_other_and_one_is_never_judged():
    cfg = UpdateValidationConfig(max_norm_ratio=10)
    accepted, rejected = validate_updates(GLOBAL, [update("small", [1, 0, 0, 0]), update("big", [20, 0, 0, 0])], cfg)
    assert [u.client for u in accepted] == ["small"] and rejected[0][0] == "big"
    accepted, rejected = validate_updates(GLOBAL, [update("alone", [1000, 0, 0, 0])], cfg)
    assert [u.client for u in accepted] == ["alone"] and rejected == []


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "fedmedian",
                                  "trimmed_mean"])
def test_aggregating_validated_updates_reuses_their_deltas_and_gives_the_same_model_bit_for_bit(name):
    """Validation forms each update's delta in its own matrix; the aggregation takes them from there (a view
    when the accepted rows are consecutive, a copy when a rejected one sits between them): the same model as
    from the raw updates."""
    from crossfed.config.federation import StrategyConfig
    from crossfed.federation.strategies import build_strategy

    rng = np.random.default_rng(7)
    global_state = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}

    def updates():
        shifts = [0.1, 0.2, 500.0, 0.15]  # the third is an outlier: rejected, between accepted ones
        return [ClientUpdate(f"c{i}", {k: v + np.float32(s) * rng.normal(size=v.shape).astype(np.float32)
                                       for k, v in global_state.items()}, 10 + i) for i, s in enumerate(shifts)]

    raw = updates()
    for accepted_ones in (raw[:2], raw):
        fresh = [ClientUpdate(u.client, u.state, u.num_examples) for u in accepted_ones]
        accepted, _ = validate_updates(global_state, accepted_ones, UpdateValidationConfig(max_norm_ratio=10))
        assert [u.client for u in accepted] == [u.client for u in fresh if u.client != "c2"]
        assert all(u.delta is not None for u in accepted)
        from crossfed.federation.strategies.base import Layout, client_deltas

        deltas = client_deltas(Layout.of(global_state), None, accepted)
        # a view of validation's matrix for consecutive rows, a copy around the rejected third update
        assert np.shares_memory(deltas, accepted[0].delta) == (len(accepted_ones) == 2)
        expected = build_strategy(StrategyConfig(name=name)).aggregate(
            global_state, [u for u in fresh if u.client != "c2"])
        actual = build_strategy(StrategyConfig(name=name)).aggregate(global_state, accepted)
        for key in global_state:
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{name} {key}")
