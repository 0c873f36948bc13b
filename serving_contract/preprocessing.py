"""The ``keras.applications`` preprocessing modes an export may declare, and their constants.

The gateway applies them with numpy (flask_server/preprocess.py) and the exporter's
``serving_uint8`` signature in the graph (scripts/export_saved_model.py); both take the names and
numbers from here. Values from Keras 3.15, ``keras/src/applications/imagenet_utils.py``
(``_preprocess_numpy_input``).
"""

from __future__ import annotations

#: ``tf``: -1..1 (InceptionV3); ``caffe``: BGR minus ImageNet means (ResNet50, VGG);
#: ``torch``: 0..1, then ImageNet mean/std (DenseNet); ``none``: raw 0..255 floats.
MODES = ("tf", "caffe", "torch", "none")
#: InceptionV3's mode, the default everywhere a mode is not given.
DEFAULT_MODE = "tf"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def check_mode(mode: str) -> None:
    """ValueError unless ``mode`` is one of ``MODES``."""
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {', '.join(MODES)}")
