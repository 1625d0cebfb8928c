"""MLflow models-from-code entry: the logged model is defined by code, not by a pickle."""

from mlflow.models import set_model

from cnnexp.serving.pyfunc import ImageClassifier

set_model(ImageClassifier())
