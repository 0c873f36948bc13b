"""The ``<model>.keras.json`` sidecar: what the download script knows about a .keras file it wrote.

``scripts/download_model.py`` writes it beside the model; ``scripts/export_saved_model.py`` reads
it and copies it into the export's ``export_info.json``, so its keys are the export info's
(``serving_contract.export``): ``model`` (the ``keras.applications`` name), ``input_size``
``[h, w]``, ``preprocessing`` and ``weights`` (``imagenet``, ``untrained`` or the weights file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIDECAR_SUFFIX = ".json"


def sidecar_path(model_path: str | Path) -> Path:
    """``FILE.keras`` -> ``FILE.keras.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_model_info(model_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``model_path`` as a dict, or {} when there is none (a model of the user's own)."""
    path = sidecar_path(model_path)
    return json.loads(path.read_text()) if path.exists() else {}
