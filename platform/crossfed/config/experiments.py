"""Where each experiment's events are and which node group trains on them."""

from pydantic import Field, PositiveFloat, PositiveInt, NonNegativeFloat

from crossfed.config.base import Section


class DatasetConfig(Section):
    """A set of ROOT files read with one schema and one selection."""

    files: list[str] = Field(min_length=1, description="paths, globs or fsspec URLs")
    selection: str | None = Field(None, description="e.g. 'n_leptons >= 1 and n_jets >= 2 and n_bjets >= 1'")
    max_events: PositiveInt | None = None


class LabelledConfig(Section):
    """Signal and background samples for the downstream classification."""

    signal: DatasetConfig
    background: DatasetConfig


class ClusterConfig(Section):
    """The Ray node group an experiment's client runs on, and how many workers it starts there."""

    node_group: str | None = Field(
        None, description="value of the node label `crossfed.io/experiment`; None runs anywhere (laptop)"
    )
    workers: PositiveInt = 1
    cpus_per_worker: PositiveFloat = 1.0
    gpus_per_worker: NonNegativeFloat = 0.0


class ExperimentConfig(Section):
    data_schema: str = Field(
        alias="schema", description="built-in schema name (cms_nanoaod, atlas_opendata, atlas_physlite) or a YAML path"
    )
    pretrain: DatasetConfig | None = None
    finetune: LabelledConfig | None = None
    cluster: ClusterConfig = ClusterConfig()
