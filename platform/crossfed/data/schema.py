"""Schema mapping: which branches of an experiment's ROOT files hold which object features.

A schema is YAML, never code (the built-in ones live in `schemas/*.yaml` and use the same language):

    tree: Events                  # or a list of candidates, the first one the file has is read
    units: GeV                    # or MeV; converted to GeV on reading
    collections:
      muons:
        pt: Muon_pt               # kinematics: pt, eta, phi and one of mass / energy ...
        eta: Muon_eta
        phi: Muon_phi
        mass: Muon_mass           # a branch name, or a number (a constant mass in `units`)
        charge: Muon_charge
      electrons:                  # ... or px, py, pz, energy
        px: el_px
        ...
        type_branch: lep_type     # keep only objects whose type_branch value is in type_values
        type_values: [11, -11]
      jets:
        ...
        btag: Jet_btagDeepFlavB   # jets with btag > btag_wp become BJET
        btag_wp: 0.2783
      taus: {..., optional: true} # optional: skipped without error when the file lacks its branches
    met:
      pt: MET_pt                  # pt + phi, or px + py (a per-event list of terms is summed)
      phi: MET_phi

Errors name the schema file and the key path; an unknown key suggests the closest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crossfed.config import describe_validation_error, read_yaml
from crossfed.errors import CrossfedError

SCHEMA_DIR = Path(__file__).parent / "schemas"
BUILTIN_SCHEMAS = tuple(sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml")))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectionSpec(_Strict):
    """Branches of one object collection (one ROOT branch per feature, jagged: one entry per object)."""

    pt: str | None = None
    eta: str | None = None
    phi: str | None = None
    mass: str | float | None = None
    energy: str | None = None
    px: str | None = None
    py: str | None = None
    pz: str | None = None
    charge: str | None = None
    btag: str | None = None
    btag_wp: float | None = None
    type_branch: str | None = None
    type_values: list[int] | None = None
    optional: bool = False

    @model_validator(mode="after")
    def _one_kinematics_set(self):
        polar = self.pt is not None or self.eta is not None or self.phi is not None
        cartesian = self.px is not None or self.py is not None or self.pz is not None
        if polar == cartesian:
            raise ValueError("give the kinematics either as pt, eta, phi (+ mass or energy) or as px, py, pz, energy")
        if polar and (self.pt is None or self.eta is None or self.phi is None):
            raise ValueError("pt, eta and phi are all needed")
        if polar and (self.mass is None) == (self.energy is None):
            raise ValueError("give exactly one of mass or energy with pt, eta, phi")
        if cartesian and (self.px is None or self.py is None or self.pz is None or self.energy is None):
            raise ValueError("px, py, pz and energy are all needed")
        if cartesian and self.mass is not None:
            raise ValueError("mass is not used with px, py, pz, energy")
        if (self.btag is None) != (self.btag_wp is None):
            raise ValueError("btag and btag_wp go together")
        if (self.type_branch is None) != (self.type_values is None):
            raise ValueError("type_branch and type_values go together")
        return self

    @property
    def is_cartesian(self) -> bool:
        return self.px is not None

    def branches(self) -> list[str]:
        names = [self.pt, self.eta, self.phi, self.energy, self.px, self.py, self.pz, self.charge, self.btag,
                 self.type_branch, self.mass if isinstance(self.mass, str) else None]
        return [n for n in names if n is not None]


class MetSpec(_Strict):
    """Missing transverse momentum: one value per event (or a list of terms per event, summed)."""

    pt: str | None = None
    phi: str | None = None
    px: str | None = None
    py: str | None = None
    optional: bool = False

    @model_validator(mode="after")
    def _one_form(self):
        polar = self.pt is not None and self.phi is not None and self.px is None and self.py is None
        cartesian = self.px is not None and self.py is not None and self.pt is None and self.phi is None
        if not (polar or cartesian):
            raise ValueError("give MET either as pt and phi or as px and py")
        return self

    def branches(self) -> list[str]:
        return [n for n in (self.pt, self.phi, self.px, self.py) if n is not None]


class Collections(_Strict):
    electrons: CollectionSpec | None = None
    muons: CollectionSpec | None = None
    taus: CollectionSpec | None = None
    photons: CollectionSpec | None = None
    jets: CollectionSpec | None = None


class Schema(_Strict):
    tree: str | list[str] = Field(description="TTree or RNTuple name; a list: the first the file has")
    units: Literal["GeV", "MeV"] = "GeV"
    collections: Collections
    met: MetSpec | None = None
    description: str = ""

    @property
    def tree_names(self) -> list[str]:
        return [self.tree] if isinstance(self.tree, str) else list(self.tree)

    @property
    def scale_to_gev(self) -> float:
        return 1e-3 if self.units == "MeV" else 1.0


def load_schema(name_or_path: str | Path) -> Schema:
    """A built-in schema by name (`cms_nanoaod`, `atlas_opendata`, `atlas_physlite`) or a YAML file."""
    path = Path(name_or_path)
    if str(name_or_path) in BUILTIN_SCHEMAS:
        path = SCHEMA_DIR / f"{name_or_path}.yaml"
    elif path.suffix not in (".yaml", ".yml"):
        raise CrossfedError(
            f"unknown schema {str(name_or_path)!r}: use one of {', '.join(BUILTIN_SCHEMAS)} or a .yaml file"
        )
    if not path.is_file():
        raise CrossfedError(f"{path}: no such schema file")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CrossfedError(f"{path}: a schema must be a mapping with tree, units, collections, met")
    try:
        return Schema.model_validate(raw)
    except ValidationError as err:
        raise CrossfedError(describe_validation_error(err, str(path), Schema)) from None
