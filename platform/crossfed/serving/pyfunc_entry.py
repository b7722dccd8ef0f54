"""The script an MLflow model folder runs when loaded (MLflow's "models from code"): no pickled object,
the network is rebuilt from the folder's artifacts by `CrossfedModel.load_context`. Needs crossfed installed."""

from mlflow.models import set_model

from crossfed.serving.mlflow_model import CrossfedModel

set_model(CrossfedModel())
