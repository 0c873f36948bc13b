"""What a version's metadata tells the gateway (model_metadata.py), from replies shaped as TF
Serving's REST API prints GetModelMetadataResponse (the real server has no export_info)."""

from __future__ import annotations

import pytest

from flask_server.model_config import ModelSpec
from flask_server.model_metadata import VersionMetadata, version_settings
from tests.gateway.test_served_model import THREE, export, signature_def

SPEC = ModelSpec(route="m", model_server_url="http://unused", model_name="m")
IMAGENET_LIKE = [(f"n{i}", f"l{i}") for i in range(3)]


def reply(metadata: dict) -> dict:
    return {"model_spec": {"name": "m", "version": "1"}, "metadata": metadata}


def test_the_real_servers_metadata_gives_size_classes_and_signature():
    """tensorflow_model_server shows only signature defs: the size comes from serving_default's
    image input, the classes from the probabilities output, and serving_topk is preferred."""
    metadata = VersionMetadata.from_reply(reply(signature_def("serving_default", "serving_uint8", "serving_topk",
                                                              size=(224, 160), classes=7)))
    assert "__saved_model_init_op" not in metadata.signatures
    assert metadata.input_size() == (224, 160) and metadata.classes() == 7 and metadata.labels() is None
    settings = version_settings(SPEC, IMAGENET_LIKE, metadata)
    assert (settings.spec.signature, settings.spec.input_size, settings.labels, settings.classes) == (
        "serving_topk", (224, 160), None, 7)
    assert settings.top_k_signature and settings.spec.input_format == "raw_uint8_b64"


@pytest.mark.parametrize("signatures, chosen, input_format", [
    (("serving_default", "serving_uint8", "serving_bytes"), "serving_uint8", "raw_uint8_b64"),
    (("serving_default",), "serving_default", "json"),
    ((), "serving_uint8", "raw_uint8_b64"),  # nothing known: today's default
])
def test_signature_preference(signatures, chosen, input_format):
    settings = version_settings(SPEC, IMAGENET_LIKE, VersionMetadata.from_reply(reply(signature_def(*signatures))))
    assert (settings.spec.signature, settings.spec.input_format) == (chosen, input_format)


def test_serving_topk_without_k_is_not_used():
    metadata = signature_def("serving_uint8", "serving_topk")
    del metadata["signature_def"]["signature_def"]["serving_topk"]["inputs"]["k"]
    assert VersionMetadata.from_reply(reply(metadata)).preferred_signature() == "serving_uint8"


def test_export_info_gives_size_mode_and_labels():
    info = export((6, 6), THREE, "serving_uint8")
    info["export_info"]["preprocessing"] = "caffe"
    settings = version_settings(SPEC, IMAGENET_LIKE, VersionMetadata.from_reply(reply(info)))
    assert (settings.spec.input_size, settings.spec.preprocessing, settings.labels) == ((6, 6), "caffe", THREE)


def test_stated_keys_are_kept():
    spec = ModelSpec(route="m", model_server_url="http://unused", model_name="m", input_size=(9, 9),
                     preprocessing="torch", signature="serving_bytes", input_format="raw_float32_b64",
                     explicit=frozenset({"input_size", "preprocessing", "signature", "labels"}))
    settings = version_settings(spec, IMAGENET_LIKE, VersionMetadata.from_reply(
        reply(export((6, 6), THREE, "serving_uint8", "serving_topk"))))
    assert settings.spec == spec and settings.labels == IMAGENET_LIKE


@pytest.mark.parametrize("bad", [None, [], {"metadata": "x"}, {"metadata": {"signature_def": {"signature_def": 3}}},
                                 reply({"export_info": {"input_size": [0, "a"], "labels": [{"id": 1}]}})])
def test_malformed_metadata_teaches_nothing(bad):
    metadata = VersionMetadata.from_reply(bad)
    assert (metadata.input_size(), metadata.labels(), metadata.classes(), metadata.preferred_signature()) == (
        None, None, None, None)
    assert version_settings(SPEC, IMAGENET_LIKE, metadata).spec == SPEC
