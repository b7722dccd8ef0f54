"""Schema YAML validation and the ast-walking selection language."""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.data.schema import BUILTIN_SCHEMAS, load_schema
from crossfed.data.selection import VARIABLES, Selection, parse_selection
from crossfed.errors import CrossfedError


def test_builtin_schemas_load():
    assert set(BUILTIN_SCHEMAS) == {"cms_nanoaod", "atlas_opendata", "atlas_physlite"}
    cms = load_schema("cms_nanoaod")
    assert cms.tree_names == ["Events"] and cms.collections.jets.btag_wp == 0.2783 and cms.units == "GeV"
    atlas = load_schema("atlas_opendata")
    assert atlas.scale_to_gev == 1e-3 and atlas.collections.muons.type_values == [13, -13]
    assert load_schema("atlas_physlite").tree_names == ["CollectionTree", "EventData"]


def test_typo_names_file_and_key_path_and_suggests(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("tree: t\ncollections:\n  jets:\n    pt: a\n    eta: b\n    phi: c\n    mass: d\n    btagg: e\n")
    with pytest.raises(CrossfedError) as err:
        load_schema(path)
    assert str(err.value) == f"{path}: collections.jets.btagg: unknown key (did you mean 'btag'?)"
    path.write_text("tree: t\ncolections: {}\n")
    with pytest.raises(CrossfedError, match=r"colections: unknown key \(did you mean 'collections'\?\)"):
        load_schema(path)


@pytest.mark.parametrize("collection, message", [
    ("{pt: a, eta: b, phi: c}", "give exactly one of mass or energy"),
    ("{pt: a, eta: b, phi: c, mass: d, px: e}", "give the kinematics either as pt, eta, phi"),
    ("{px: a, py: b, pz: c}", "px, py, pz and energy are all needed"),
    ("{pt: a, eta: b, phi: c, mass: d, btag: e}", "btag and btag_wp go together"),
])
def test_inconsistent_kinematics_are_rejected(tmp_path, collection, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"tree: t\ncollections:\n  jets: {collection}\n")
    with pytest.raises(CrossfedError, match=f"bad.yaml: collections.jets: {message}"):
        load_schema(path)


def test_unknown_schema_name():
    with pytest.raises(CrossfedError, match="unknown schema 'cms_nano'.*cms_nanoaod"):
        load_schema("cms_nano")


def _variables(**values):
    base = {name: np.zeros(4) for name in VARIABLES}
    base.update({k: np.asarray(v, dtype=float) for k, v in values.items()})
    return base


def test_selection_evaluates_vectorised():
    variables = _variables(n_leptons=[0, 1, 2, 1], n_jets=[4, 2, 1, 3], n_bjets=[1, 1, 1, 0],
                           met=[30, 25, 50, 10], lead_lepton_pt=[0, 30, 20, 40], ht=[100, 80, 60, 200])
    cut = Selection("n_leptons >= 1 and n_jets >= 2 and n_bjets >= 1")
    assert cut(variables).tolist() == [False, True, False, False]
    assert Selection("met > 20 and lead_lepton_pt > 25")(variables).tolist() == [False, True, False, False]
    # ht/2 = 50, 40, 30, 100 against max(met, 45) = 45, 45, 50, 45; abs(-n_jets) == 1 only in event 2
    assert Selection("not (ht / 2 > max(met, 45)) or abs(-n_jets) == 1")(variables).tolist() == \
        [False, True, True, False]
    assert Selection("ht / 2 > max(met, 45) or abs(-n_jets) == 1")(variables).tolist() == [True, False, True, True]
    assert Selection("20 < met <= 30")(variables).tolist() == [True, True, False, False]
    assert parse_selection("  ") is None and parse_selection(None) is None


@pytest.mark.parametrize("expression, message", [
    ("n_jet >= 2", "unknown variable 'n_jet' \\(did you mean 'n_jets'\\?\\)"),
    ("n_jets >=", "not a valid expression"),
    ("__import__('os').system('true')", "only the functions abs, min, max may be called"),
    ("met.real > 1", "is not allowed"),
    ("met + 1", "must be a condition"),
    ("n_jets >= 'two'", "only numbers are allowed"),
    ("[met][0] > 1", "is not allowed"),
])
def test_bad_selections_name_the_expression_and_list_the_variables(expression, message):
    with pytest.raises(CrossfedError, match=message) as err:
        Selection(expression)
    assert f"selection {expression!r}" in str(err.value)
    assert "variables: n_electrons, n_muons" in str(err.value)
