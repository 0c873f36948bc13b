"""The ``keras.applications`` ImageNet classifiers the scripts can build, as plain data.

One row per Keras constructor name: its default input size (the size its ImageNet weights were
trained at), the preprocessing mode its ``preprocess_input`` applies, the ``keras.applications``
submodule holding that ``preprocess_input``, and the ImageNet weights file Keras downloads (and the
name it caches it under in ``~/.keras/models``). Values read from Keras 3.15's
``keras/src/applications/*.py``. Mode ``none``: the model rescales inside its own graph
(EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3), so its ``preprocess_input`` is the identity.

All of them output 1000 ImageNet classes in Keras' order (``serving_contract.labels``).
"""

from __future__ import annotations

from dataclasses import dataclass

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Application:
    """One ``keras.applications`` classifier: how to build it, feed it and find its weights."""

    name: str  #: the constructor, ``keras.applications.<name>``
    module: str  #: ``keras.applications.<module>.preprocess_input``
    input_size: tuple[int, int]  #: (height, width)
    preprocessing: str  #: one of serving_contract.preprocessing.MODES
    weights_url: str  #: include_top ImageNet weights
    weights_file: str  #: the name Keras caches ``weights_url`` under

    @property
    def weights_host(self) -> str:
        """The host the ImageNet weights come from (for reachability checks and messages)."""
        return self.weights_url.split("/")[2]


def _row(name: str, module: str, size: int, mode: str, path: str, cached_as: str | None = None) -> Application:
    url = path if path.startswith("https://") else _KERAS_WEIGHTS + path
    return Application(name, module, (size, size), mode, url, cached_as or url.rsplit("/", 1)[1])


def _kernels(folder: str, stem: str) -> str:
    return f"{folder}/{stem}_weights_tf_dim_ordering_tf_kernels.h5"


_EFFICIENTNET_SIZES = {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "B4": 380, "B5": 456, "B6": 528, "B7": 600}
_EFFICIENTNET_V2_SIZES = {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "S": 384, "M": 480, "L": 480}

#: Keras constructor name -> Application, for every ImageNet classifier in keras.applications.
APPLICATIONS: dict[str, Application] = {app.name: app for app in [
    *(_row(f"ConvNeXt{size}", "convnext", 224, "none", f"convnext/convnext_{size.lower()}.h5")
      for size in ("Tiny", "Small", "Base", "Large", "XLarge")),
    *(_row(f"DenseNet{depth}", "densenet", 224, "torch", _kernels("densenet", f"densenet{depth}"))
      for depth in (121, 169, 201)),
    *(_row(f"EfficientNet{variant}", "efficientnet", size, "none",
           f"https://storage.googleapis.com/keras-applications/efficientnet{variant.lower()}.h5")
      for variant, size in _EFFICIENTNET_SIZES.items()),
    *(_row(f"EfficientNetV2{variant}", "efficientnet_v2", size, "none",
           f"efficientnet_v2/efficientnetv2-{variant.lower()}.h5")
      for variant, size in _EFFICIENTNET_V2_SIZES.items()),
    _row("InceptionResNetV2", "inception_resnet_v2", 299, "tf", _kernels("inception_resnet_v2", "inception_resnet_v2")),
    _row("InceptionV3", "inception_v3", 299, "tf", _kernels("inception_v3", "inception_v3")),
    _row("MobileNet", "mobilenet", 224, "tf", "mobilenet/mobilenet_1_0_224_tf.h5"),
    _row("MobileNetV2", "mobilenet_v2", 224, "tf",
         "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
    *(_row(f"MobileNetV3{size}", "mobilenet_v3", 224, "none",
           f"mobilenet_v3/weights_mobilenet_v3_{size.lower()}_224_1.0_float.h5")
      for size in ("Small", "Large")),
    _row("NASNetLarge", "nasnet", 331, "tf", "nasnet/NASNet-large.h5", "nasnet_large.h5"),
    _row("NASNetMobile", "nasnet", 224, "tf", "nasnet/NASNet-mobile.h5", "nasnet_mobile.h5"),
    *(_row(f"ResNet{depth}", "resnet", 224, "caffe", _kernels("resnet", f"resnet{depth}"))
      for depth in (50, 101, 152)),
    *(_row(f"ResNet{depth}V2", "resnet_v2", 224, "tf", _kernels("resnet", f"resnet{depth}v2"))
      for depth in (50, 101, 152)),
    _row("VGG16", "vgg16", 224, "caffe", _kernels("vgg16", "vgg16")),
    _row("VGG19", "vgg19", 224, "caffe", _kernels("vgg19", "vgg19")),
    _row("Xception", "xception", 299, "tf", _kernels("xception", "xception")),
]}


def find_application(name: str) -> Application:
    """The table row for ``name`` (exact Keras spelling, or any case); KeyError naming the choices."""
    if name in APPLICATIONS:
        return APPLICATIONS[name]
    by_lower = {key.lower(): app for key, app in APPLICATIONS.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise KeyError(f"unknown model {name!r}; expected a keras.applications classifier: {', '.join(APPLICATIONS)}")
