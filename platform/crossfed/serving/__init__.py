"""crossfed models as MLflow models, and scoring events with them.

- `mlflow_model`: the pyfunc wrapper every crossfed model is logged as (foundation models and fine-tuned
  classifiers), its signature, and reading a model folder's state back;
- `score`: a fine-tuned classifier's signal probabilities for the events of ROOT files (`crossfed score`).
"""
