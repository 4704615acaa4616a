"""Model weights as safetensors (never pickle): a version written atomically through a temporary folder, and loaded back."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

import numpy as np
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from core.model import backbones, registry
from core.model.backbones import Classifier
from core.workspace.paths import Workspace


def save_version(ws: Workspace, model: Classifier, meta: dict[str, Any], reference: dict[str, np.ndarray]) -> str:
    """Write models/<version>/ through a temporary folder and a rename, then register it."""
    ws.models_dir.mkdir(parents=True, exist_ok=True)
    tmp = ws.models_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / registry.WEIGHTS))
        save_arrays({k: np.ascontiguousarray(v) for k, v in reference.items()}, str(tmp / registry.REFERENCE))
        version = registry.next_version(ws)
        meta = {**meta, "version": version}
        (tmp / registry.META).write_text(json.dumps(meta, indent=2, default=str))
        os.rename(tmp, ws.models_dir / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written temporary folder, never a user file
        raise
    registry.register(ws, version, meta)
    return version


def load_version(ws: Workspace, version: str) -> tuple[Classifier, dict[str, Any]]:
    """The model (no unpickling: safetensors only) and its metadata; UserError when its files are damaged or
    are not the ones registered."""
    meta = registry.require_intact(ws, version)
    model = backbones.build(meta["backbone"], len(meta["classes"]), pretrained=False)
    model.load_state_dict(load_file(str(ws.models_dir / version / registry.WEIGHTS)))
    return model.eval(), meta
