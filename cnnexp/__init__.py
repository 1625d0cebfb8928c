"""cnnexp: tracked CNN image-classification experiments with Keras, MLflow and Optuna."""

__version__ = "0.2.0"
