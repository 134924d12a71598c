"""The code of a run's MLflow model (models from code, see model.py): MLflow runs this file to get the model."""
from mlflow.models import set_model

from hybridpose.tracking.model import HybridPoseModel

set_model(HybridPoseModel())
