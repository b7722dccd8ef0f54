"""Where runs are logged: an MLflow tracking URI (embedded SQLite store by default)."""

from pydantic import Field

from crossfed.config.base import Section


class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory")
    experiment: str = "crossfed"
    registered_model: str | None = Field(
        None, description="registry name of pre-trained models; None: the run config's name")
    system_metrics: bool = Field(
        True, description="each federation client logs its node's CPU, memory, disk, network and GPU use into the "
        "run (system/<client>/...; never under differential privacy). Off, the clients import no MLflow: 2-4 s "
        "of CPU each, taken from the first rounds' training where the node has no idle core")
