"""Where models logged by cnnexp 0.1.0 look for their class: kept so they load after the move.

Their models-from-code entry runs ``from cnnexp.image_model import ImageClassifier``. In a fresh
serving process that resolves to the copy of cnnexp logged with the model; where this installed
cnnexp is already imported (a notebook, ``cnnexp app``), it resolves here.
"""

from cnnexp.serving.pyfunc import ImageClassifier

__all__ = ["ImageClassifier"]
