"""CNNs built from :class:`~cnnexp.config.ModelConfig`. Importing the package registers cnnexp's
own Keras layers, so a saved model that holds them loads."""

from cnnexp.models.cnn import build_model, check_spatial
from cnnexp.models.norm import FusedBatchNormalization
from cnnexp.models.tta import AverageViews, MirrorAverage, MirrorBatch, TestTimeViews

__all__ = [
    "build_model",
    "check_spatial",
    "FusedBatchNormalization",
    "AverageViews",
    "MirrorAverage",
    "MirrorBatch",
    "TestTimeViews",
]
