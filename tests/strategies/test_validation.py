"""Update screening: broken and outlier updates are rejected with a reason, the rest go on."""

import numpy as np

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
