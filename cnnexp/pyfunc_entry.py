"""MLflow models-from-code entry: the logged model is defined by code, not by a pickle."""

from mlflow.models import set_model

from cnnexp.image_model import ImageClassifier

set_model(ImageClassifier())
