"""Schema YAML validation and the ast-walking selection language."""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.data.schema import BUILTIN_SCHEMAS, SCHEMA_DIR, load_schema
from crossfed.data.selection import VARIABLES, Selection, parse_selection
from crossfed.errors import CrossfedError


def test_builtin_schemas_load():
    assert set(BUILTIN_SCHEMAS) == {"cms_nanoaod", "atlas_opendata", "atlas_physlite"}
    cms = load_schema("cms_nanoaod")
    assert cms.tree_names == ["Events"] and cms.units == "GeV"
    assert [(c.branch, c.wp) for c in cms.collections.jets.btag] == [
        ("Jet_btagDeepFlavB", 0.2783), ("Jet_btagDeepB", 0.6321), ("Jet_btagCSVV2", 0.8)]
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
    ("{pt: a, eta: b, phi: c, mass: d, btag: e, btag_wp: 0.5}", "btag is a list of candidate discriminants"),
    ("{pt: a, eta: b, phi: c, mass: d, exclude_abs_eta: [1.5, 1.4]}", "exclude_abs_eta is \\[low, high\\]"),
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


@pytest.mark.parametrize("extra, message", [
    ("collections:\n  jets: {pt: a, eta: b, phi: c, mass: d, btag: [{branch: x, wp: 2, range: [0, 1]}]}\n",
     "collections.jets.btag.0: wp 2.0 is outside range \\[0.0, 1.0\\]"),
    ("collections:\n  jets: {pt: a, eta: b, phi: c, mass: d}\noverlap_removal: [{remove: jets, near: taus, dr: 0.4}]\n",
     "overlap_removal names 'taus', which collections does not define"),
    ("collections:\n  jets: {pt: a, eta: b, phi: c, mass: d}\noverlap_removal: [{remove: jets, near: jets, dr: 0.4}]\n",
     "overlap_removal.0: remove and near must be two different collections"),
    ("collections:\n  jets: {pt: a, eta: b, phi: c, mass: d}\nmet: {px: x, py: y, term: PVSoftTrkCore}\n",
     "met: term and term_names go together"),
    ("collections:\n  jets: {pt: a, eta: b, phi: c, mass: d, id: [{min: 1}]}\n",
     "collections.jets.id.0.branch: Field required"),
])
def test_object_definition_btag_and_met_keys_are_checked(tmp_path, extra, message):
    path = tmp_path / "bad.yaml"
    path.write_text("tree: t\n" + extra)
    with pytest.raises(CrossfedError, match=message):
        load_schema(path)


def test_every_builtin_schema_documents_its_definitions_and_applies_them():
    for name in BUILTIN_SCHEMAS:
        schema = load_schema(name)
        text = (SCHEMA_DIR / f"{name}.yaml").read_text()
        assert "Object definitions" in text and "Overlap removal" in text and "MET" in text, name
        assert all(spec.min_pt is not None and spec.max_abs_eta is not None for _, spec in schema.collections if spec)
        assert schema.overlap_removal, name


def test_very_deep_selections_are_refused_with_a_clear_message():
    for expression in ["(" * 1000 + "met > 1" + ")" * 1000, "not " * 1000 + "met > 1",
                       "met" + " + met" * 3000 + " > 1"]:
        with pytest.raises(CrossfedError, match=r"nested too deeply \(more than 100 levels\)") as err:
            Selection(expression)
        assert len(str(err.value)) < 400  # the expression is shortened, not quoted whole
    assert Selection(" and ".join(["met > 1"] * 2000))({"met": np.array([2.0])}).tolist() == [True]  # long but flat
