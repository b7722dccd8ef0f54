"""One walker over the pydantic models and one formatter of their errors, for configs and schemas alike."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from crossfed.config import RunConfig, config_from_dict, describe_validation_error, walk_keys
from crossfed.data.schema import Schema
from crossfed.errors import CrossfedError

EXPERIMENT = {"schema": "cms_nanoaod", "pretrain": {"files": ["a.root"]}}


def test_walk_tells_fields_unknown_keys_entries_and_values():
    kinds = lambda path: [step.kind for step in walk_keys(RunConfig, path.split("."))]  # noqa: E731
    assert kinds("federation.strategy.server_lr") == ["field", "field", "field"]
    assert kinds("experiments.cms.cluster.workers") == ["field", "entry", "field", "field"]
    assert kinds("experiments.cms.schema") == ["field", "entry", "field"]  # the alias is the key a file uses
    assert kinds("seed.bits") == ["field", "value"]
    unknown = walk_keys(RunConfig, ["federation", "roundz"])[-1]
    assert unknown.kind == "unknown" and "rounds" in unknown.valid_keys()


def test_config_errors_name_the_key_and_suggest_the_closest():
    with pytest.raises(CrossfedError) as err:
        config_from_dict({"experiments": {"cms": {**EXPERIMENT, "clusterr": {}}}, "nme": "x"}, source="run.yaml")
    assert str(err.value) == (
        "2 problems\n"
        "  run.yaml: experiments.cms.clusterr: unknown key (did you mean 'cluster'?)\n"
        "  run.yaml: nme: unknown key (did you mean 'name'?)"
    )


def test_schema_errors_drop_union_tags_and_list_valid_keys_when_nothing_is_close():
    with pytest.raises(ValidationError) as err:
        Schema.model_validate({"tree": ["Events", 3], "collections": {"jets": {"pt": "a", "eta": "b", "phi": "c",
                                                                                "mass": [1], "zzz": 1}}})
    message = describe_validation_error(err.value, "s.yaml", Schema)
    assert "  s.yaml: tree.1: Input should be a valid string" in message  # not tree.list[str].1
    assert "  s.yaml: collections.jets.mass: Input should be a valid number" in message  # not mass.float
    assert "list[str]" not in message and "mass.str" not in message
    assert "collections.jets.zzz: unknown key (valid keys: pt, eta, phi, mass" in message
