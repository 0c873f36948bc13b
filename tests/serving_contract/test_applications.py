"""serving_contract.applications: the keras.applications table, checked against Keras itself."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from serving_contract.applications import APPLICATIONS, find_application
from serving_contract.preprocessing import MODES


def test_table_lists_every_keras_applications_classifier():
    import keras

    assert set(APPLICATIONS) == {name for name in dir(keras.applications) if name[0].isupper()}
    assert all(app.preprocessing in MODES for app in APPLICATIONS.values())


@pytest.mark.parametrize("module", sorted({app.module for app in APPLICATIONS.values()}))
def test_mode_is_what_the_modules_preprocess_input_does(module):
    from keras.src.applications import imagenet_utils

    preprocess_input = importlib.import_module(f"keras.applications.{module}").preprocess_input
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    expected = np.asarray(preprocess_input(pixels.copy()))
    for app in (app for app in APPLICATIONS.values() if app.module == module):
        if app.preprocessing == "none":
            np.testing.assert_array_equal(expected, pixels)
        else:
            np.testing.assert_allclose(expected, imagenet_utils.preprocess_input(pixels.copy(), mode=app.preprocessing),
                                       rtol=1e-6)


def test_weights_urls_and_cache_names():
    inception = APPLICATIONS["InceptionV3"]
    assert inception.input_size == (299, 299) and inception.weights_host == "storage.googleapis.com"
    assert inception.weights_url.endswith("/inception_v3/" + inception.weights_file)
    assert APPLICATIONS["NASNetLarge"].input_size == (331, 331)
    assert APPLICATIONS["NASNetLarge"].weights_file == "nasnet_large.h5"  # cached under another name than the URL's
    assert APPLICATIONS["EfficientNetB7"].input_size == (600, 600)


@pytest.mark.parametrize("name, expected", [("MobileNetV2", "MobileNetV2"), ("mobilenetv2", "MobileNetV2"),
                                            ("CONVNEXTTINY", "ConvNeXtTiny")])
def test_find_application_in_any_case(name, expected):
    assert find_application(name).name == expected


def test_unknown_application_names_the_choices():
    with pytest.raises(KeyError, match="unknown model 'LeNet'.*InceptionV3"):
        find_application("LeNet")
