"""The entry point MLflow runs to load a registered drcl version (MLflow's models from code:
no pickled object in the artifacts)."""

import mlflow

from drcl.serving.model import DrclModel

mlflow.models.set_model(DrclModel())
