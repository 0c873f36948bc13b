"""The serving signatures of an exported image classifier, as TensorFlow functions.

Names and tensor layouts are the export contract's (``serving_contract.export``); this module only
builds the graph for them: decoding raw pixel bytes, preprocessing in the graph
(``scale_in_graph``), and ``serving_topk``'s top-k with the class names as constants, so a client
of the real ``tensorflow_model_server`` gets labelled answers from the SavedModel alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving_contract.export import (INPUT_IMAGE, INPUT_K, INPUT_PIXELS_BYTES, OUTPUT_CLASS_ID,
                                     OUTPUT_CLASS_INDEX, OUTPUT_CLASS_LABEL, OUTPUT_PROBABILITIES, OUTPUT_SCORES,
                                     SERVING_BYTES, SERVING_DEFAULT, SERVING_TOPK, SERVING_UINT8, TOPK_OUTPUTS)
from serving_contract.labels import Label
from serving_contract.preprocessing import CAFFE_MEAN_BGR, TORCH_MEAN, TORCH_STD


def serving_signatures(tf: Any, model: Any, mode: str, labels: Sequence[Label]) -> dict[str, Any]:
    """``{signature name: tf.function}`` for ``model`` (input [batch, H, W, 3], output [batch, classes]).

    ``mode`` is the preprocessing ``serving_uint8`` and ``serving_topk`` apply in the graph;
    ``labels`` are the (id, label) pairs in output order that ``serving_topk`` returns.
    """
    _, height, width, channels = (int(d) if d is not None else None for d in model.inputs[0].shape)
    classes = len(labels)
    class_ids = tf.constant([ident for ident, _ in labels], tf.string)
    class_labels = tf.constant([label for _, label in labels], tf.string)

    def probabilities(images):
        return tf.cast(model(images, training=False), tf.float32)

    def images_from(pixels_bytes, dtype):
        return tf.reshape(tf.io.decode_raw(pixels_bytes, dtype, little_endian=True), [-1, height, width, channels])

    def uint8_probabilities(pixels_bytes):
        return probabilities(scale_in_graph(tf, images_from(pixels_bytes, tf.uint8), mode))

    pixels_spec = tf.TensorSpec([None], tf.string, name=INPUT_PIXELS_BYTES)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_IMAGE)])
    def serving_default(image):
        return {OUTPUT_PROBABILITIES: probabilities(image)}

    @tf.function(input_signature=[pixels_spec])
    def serving_bytes(pixels_bytes):
        return {OUTPUT_PROBABILITIES: probabilities(images_from(pixels_bytes, tf.float32))}

    @tf.function(input_signature=[pixels_spec])
    def serving_uint8(pixels_bytes):
        return {OUTPUT_PROBABILITIES: uint8_probabilities(pixels_bytes)}

    @tf.function(input_signature=[pixels_spec, tf.TensorSpec([None], tf.int32, name=INPUT_K)])
    def serving_topk(pixels_bytes, k):
        # One k for the whole batch: a tensor needs one width. max() of an empty batch is INT32_MIN.
        k_used = tf.clip_by_value(tf.reduce_max(k), 0, classes)
        # top_k sorts descending and breaks ties towards the lower index, as the gateway's top_k does.
        scores, indices = tf.math.top_k(uint8_probabilities(pixels_bytes), k=k_used, sorted=True)
        return {OUTPUT_SCORES: scores, OUTPUT_CLASS_INDEX: indices,
                OUTPUT_CLASS_ID: tf.gather(class_ids, indices), OUTPUT_CLASS_LABEL: tf.gather(class_labels, indices)}

    return {SERVING_DEFAULT: serving_default, SERVING_BYTES: serving_bytes, SERVING_UINT8: serving_uint8,
            SERVING_TOPK: serving_topk}


def signatures_info(mode: str) -> dict[str, Any]:
    """What export_info says about each signature: its inputs (described) and output names."""
    uint8_pixels = f"string[batch] of uint8 HWC bytes, scaled in the graph ({mode})"
    return {
        SERVING_DEFAULT: {"inputs": {INPUT_IMAGE: "float32[batch,H,W,C]"}, "outputs": [OUTPUT_PROBABILITIES]},
        SERVING_BYTES: {"inputs": {INPUT_PIXELS_BYTES: "string[batch] of float32 HWC bytes"},
                        "outputs": [OUTPUT_PROBABILITIES]},
        SERVING_UINT8: {"inputs": {INPUT_PIXELS_BYTES: uint8_pixels}, "outputs": [OUTPUT_PROBABILITIES]},
        SERVING_TOPK: {"inputs": {INPUT_PIXELS_BYTES: uint8_pixels,
                                  INPUT_K: "int32[batch]; max(k), clipped to the classes, for every row"},
                       "outputs": list(TOPK_OUTPUTS)},
    }


def scale_in_graph(tf: Any, pixels: Any, mode: str) -> Any:
    """``flask_server.preprocess.scale`` as TensorFlow ops: uint8 RGB -> float32 in ``mode``.

    The same float32 operations in the same order as the numpy version (and Keras'
    ``preprocess_input``), so ``serving_uint8`` feeds the model what ``serving_bytes`` would be
    sent by the gateway, up to the last bit (TensorFlow's graph may divide by multiplying with the
    reciprocal); tests/test_export.py checks every mode to 1e-6.
    """
    x = tf.cast(pixels, tf.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    if mode == "caffe":
        return tf.reverse(x, axis=[-1]) - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    return x


def warmup_inputs(height: int, width: int, channels: int) -> dict[str, dict[str, Any]]:
    """One batch-1 request's inputs per signature, for ``assets.extra/tf_serving_warmup_requests``.

    Replayed at load by our model server and by ``tensorflow_model_server``, so the first client
    request after a (hot) load does not pay for TensorFlow's lazy set-up of each signature.
    """
    import numpy as np

    shape = (height, width, channels)
    gray = np.array([np.full(shape, 128, np.uint8).tobytes()], object)
    return {SERVING_DEFAULT: {INPUT_IMAGE: np.zeros((1, *shape), np.float32)},
            SERVING_BYTES: {INPUT_PIXELS_BYTES: np.array([np.zeros(shape, "<f4").tobytes()], object)},
            SERVING_UINT8: {INPUT_PIXELS_BYTES: gray},
            SERVING_TOPK: {INPUT_PIXELS_BYTES: gray, INPUT_K: np.array([5], np.int32)}}
