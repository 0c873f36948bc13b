"""Build Keras' InceptionV3 (299x299, 1000 ImageNet classes) and save it as ``scripts/inception.keras``.

The tutorial's name for ``scripts/download_model.py --model InceptionV3``, with the same
``--weights`` (``imagenet``, the default; ``none``; or a local weights file such as
``inception_v3_weights_tf_dim_ordering_tf_kernels.h5``) and ``--output`` flags, the same offline
message and untrained-weights warning, and the same sidecar ``<output>.json``.

Typical usage::

    python scripts/download_inceptionv3_model.py                  # ImageNet weights (needs internet)
    python scripts/download_inceptionv3_model.py --weights inception_v3_weights_tf_dim_ordering_tf_kernels.h5
    python scripts/download_inceptionv3_model.py --weights none   # offline, untrained
"""

from __future__ import annotations

import argparse
import sys

from scripts.download_model import SCRIPTS_DIR, add_weights_and_output_flags, checked_output, download
from serving_contract.applications import APPLICATIONS

INCEPTION_V3 = APPLICATIONS["InceptionV3"]
DEFAULT_OUTPUT = SCRIPTS_DIR / "inception.keras"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_weights_and_output_flags(parser, "default: scripts/inception.keras")
    args = parser.parse_args(argv)
    return download(INCEPTION_V3, args.weights, checked_output(parser, args.output or DEFAULT_OUTPUT))


if __name__ == "__main__":
    sys.exit(main())
