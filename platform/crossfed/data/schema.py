"""Schema mapping: which branches of an experiment's ROOT files hold which objects, and which objects count.

A schema is YAML, never code (the built-in ones live in `schemas/*.yaml` and use the same language).
docs/schemas.md is the reference for every key, with a worked example; in short:

    tree: Events                  # or a list of candidates, the first one the file has is read
    units: GeV                    # or MeV; converted to GeV on reading
    collections:
      jets:
        pt: Jet_pt                # kinematics: pt, eta, phi + mass (branch or constant) or energy,
        eta: Jet_eta              # or px, py, pz, energy
        phi: Jet_phi
        mass: Jet_mass
        btag:                     # candidate discriminants in order; a placeholder one is skipped
          - {branch: Jet_btagDeepFlavB, wp: 0.2783, range: [0, 1]}
        min_pt: 20                # object definition: GeV thresholds, |eta| range, ID and isolation cuts
        max_abs_eta: 4.7
        id: [{branch: Jet_jetId, min: 1, optional: true}]
    overlap_removal:              # in this order: drop `remove` objects within dr of a kept `near` object
      - {remove: jets, near: electrons, dr: 0.4}
    met: {pt: MET_pt, phi: MET_phi}

Errors name the schema file and the key path; an unknown key suggests the closest valid one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crossfed.config import describe_validation_error, read_yaml
from crossfed.errors import CrossfedError, did_you_mean

SCHEMA_DIR = Path(__file__).parent / "schemas"
BUILTIN_SCHEMAS = tuple(sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml")))
CollectionName = Literal["electrons", "muons", "taus", "photons", "jets"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cut(_Strict):
    """One per-object requirement on a branch: `min <= value <= max` (either bound may be left out).

    With neither bound the branch is a flag that passes when non-zero (`Muon_looseId`, `lep_isTightID`).
    Bounds are in the file's units; `relative: true` divides the value by the object's pT first (an
    isolation cone sum such as `lep_ptcone30`). `optional: true` skips the cut on files without the
    branch; the skip is reported, never silent.
    """

    branch: str
    min: float | None = None
    max: float | None = None
    relative: bool = False
    optional: bool = False

    def describe(self) -> str:
        value = f"{self.branch}/pT" if self.relative else self.branch
        if self.min is None and self.max is None:
            return value
        if self.min is not None and self.max is not None:
            return f"{self.min:g} <= {value} <= {self.max:g}"
        return f"{value} >= {self.min:g}" if self.min is not None else f"{value} <= {self.max:g}"


class BtagCandidate(_Strict):
    """A b-tag discriminant: jets with a value above `wp` are b-jets.

    `range` is the discriminant's physical range: a chunk where no jet is inside it (a placeholder such
    as -3000) makes the reader use the next candidate; values of single jets outside it (-1 for a jet
    without tracks) are clipped into it.
    """

    branch: str
    wp: float
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _wp_inside_range(self):
        if self.range is not None and not self.range[0] <= self.wp <= self.range[1]:
            raise ValueError(f"wp {self.wp} is outside range [{self.range[0]}, {self.range[1]}]")
        return self

    def describe(self) -> str:
        return f"{self.branch} > {self.wp}"


class CollectionSpec(_Strict):
    """Branches of one object collection (jagged: one entry per object) and its object definition."""

    pt: str | None = None
    eta: str | None = None
    phi: str | None = None
    mass: str | float | None = None
    energy: str | None = None
    px: str | None = None
    py: str | None = None
    pz: str | None = None
    charge: str | None = None
    btag: list[BtagCandidate] | None = Field(None, min_length=1)
    type_branch: str | None = None
    type_values: list[int] | None = None
    optional: bool = False
    # object definition, applied in this order; thresholds in GeV whatever the file's units
    min_pt: float | None = Field(None, ge=0)
    max_abs_eta: float | None = Field(None, gt=0)
    exclude_abs_eta: tuple[float, float] | None = None
    id: list[Cut] = []
    isolation: list[Cut] = []

    @model_validator(mode="before")
    @classmethod
    def _btag_is_a_list(cls, data):
        if isinstance(data, dict) and ("btag_wp" in data or isinstance(data.get("btag"), str)):
            raise ValueError("btag is a list of candidate discriminants, each with its working point, e.g. "
                             "btag: [{branch: Jet_btagDeepFlavB, wp: 0.2783, range: [0, 1]}] (btag_wp is gone)")
        return data

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
        if (self.type_branch is None) != (self.type_values is None):
            raise ValueError("type_branch and type_values go together")
        if self.exclude_abs_eta is not None and not 0 <= self.exclude_abs_eta[0] < self.exclude_abs_eta[1]:
            raise ValueError("exclude_abs_eta is [low, high] with 0 <= low < high")
        return self

    @property
    def is_cartesian(self) -> bool:
        return self.px is not None

    def feature_branches(self) -> dict[str, str]:
        """Feature name -> branch, for the kinematics, charge and type_branch (b-tag and cuts apart)."""
        names = dict(pt=self.pt, eta=self.eta, phi=self.phi, energy=self.energy, px=self.px, py=self.py,
                     pz=self.pz, charge=self.charge, type_branch=self.type_branch,
                     mass=self.mass if isinstance(self.mass, str) else None)
        return {feature: name for feature, name in names.items() if name is not None}

    def cuts(self) -> list[tuple[str, Cut]]:
        """(stage, cut) for every branch cut, stages 'id' then 'isolation'."""
        return [("id", c) for c in self.id] + [("isolation", c) for c in self.isolation]

    def describe_kinematic_cuts(self) -> str:
        parts = [f"pT > {self.min_pt:g} GeV" if self.min_pt is not None else "",
                 f"|η| < {self.max_abs_eta:g}" if self.max_abs_eta is not None else "",
                 "excluding {:g} < |η| < {:g}".format(*self.exclude_abs_eta) if self.exclude_abs_eta else ""]
        return ", ".join(p for p in parts if p)


class MetSpec(_Strict):
    """Missing transverse momentum: one value per event, or one named term of a per-event list of terms.

    `rebuild: true` makes the term a soft term: MET = −(vector sum of the selected objects) + the term,
    as ATLAS builds MET. `prefer` is another MET source read instead wherever a file has its branches.
    """

    pt: str | None = None
    phi: str | None = None
    px: str | None = None
    py: str | None = None
    term_names: str | None = None
    term: str | None = None
    rebuild: bool = False
    prefer: MetSpec | None = None
    optional: bool = False

    @model_validator(mode="after")
    def _one_form(self):
        polar = self.pt is not None and self.phi is not None and self.px is None and self.py is None
        cartesian = self.px is not None and self.py is not None and self.pt is None and self.phi is None
        if not (polar or cartesian):
            raise ValueError("give MET either as pt and phi or as px and py")
        if (self.term is None) != (self.term_names is None):
            raise ValueError("term and term_names go together (the term to read, the branch naming each term)")
        return self

    def branches(self) -> dict[str, str]:
        names = dict(pt=self.pt, phi=self.phi, px=self.px, py=self.py, term_names=self.term_names)
        return {key: name for key, name in names.items() if name is not None}

    def describe(self) -> str:
        """'MET_pt, MET_phi', or 'PVSoftTrkCore of MET_Core_AnalysisMETAuxDyn.mpx/mpy' (+ how it is rebuilt)."""
        first, second = (self.pt, self.phi) if self.pt is not None else (self.px, self.py)
        container = first.rpartition(".")[0]
        same_container = container and second.startswith(container + ".")
        what = f"{first}/{second.rpartition('.')[2]}" if same_container else f"{first}, {second}"
        if self.term is not None:
            what = f"{self.term} of {what}"
        return f"rebuilt: −Σ selected objects + {what}" if self.rebuild else what


class OverlapStep(_Strict):
    """Drop the `remove` objects within ΔR < dr of any object of `near` still kept at this step."""

    remove: CollectionName
    near: CollectionName
    dr: float = Field(gt=0)

    @model_validator(mode="after")
    def _two_collections(self):
        if self.remove == self.near:
            raise ValueError("remove and near must be two different collections")
        return self

    def describe(self) -> str:
        return f"{self.remove} within ΔR < {self.dr:g} of {self.near}"


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
    overlap_removal: list[OverlapStep] = []
    met: MetSpec | None = None
    description: str = ""

    @model_validator(mode="after")
    def _overlaps_name_defined_collections(self):
        defined = {kind for kind, spec in self.collections if spec is not None}
        for step in self.overlap_removal:
            for kind in (step.remove, step.near):
                if kind not in defined:
                    raise ValueError(f"overlap_removal names {kind!r}, which collections does not define")
        return self

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
        name = str(name_or_path)
        raise CrossfedError(f"unknown schema {name!r}{did_you_mean(name, BUILTIN_SCHEMAS)}: use one of "
                            f"{', '.join(BUILTIN_SCHEMAS)} or a .yaml file")
    if not path.is_file():
        raise CrossfedError(f"{path}: no such schema file")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CrossfedError(f"{path}: a schema must be a mapping with tree, units, collections, met")
    try:
        return Schema.model_validate(raw)
    except ValidationError as err:
        raise CrossfedError(describe_validation_error(err, str(path), Schema)) from None
