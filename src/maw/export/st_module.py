"""A sentence-transformers module for a BERT encoder with MAW attention in some layers.

This file is shipped, unchanged, as ``modeling_maw.py`` in every folder ``maw export`` writes for a
MAW model; ``modules.json`` names ``modeling_maw.MAWTransformer`` as the first module, so

    SentenceTransformer(folder_or_hub_id, trust_remote_code=True)

loads it (through ``transformers``' remote-code loader). It needs sentence-transformers, transformers,
torch and safetensors, and **not** the ``maw`` package: the MAW attention code travels in the folder's
``maw_code/`` package (a copy of maw's own ``maw.attention`` and ``maw.config`` with its imports made
relative), imported here under a name derived from its content, so it never clashes with an
installed ``maw`` nor with another exported model.

What it builds (``_load_model``): the Hugging Face backbone from ``config.json`` with random
weights, then in each layer listed in ``maw_config.json`` the layer's ``attention.self`` replaced by
``MAWSelfAttention.from_bert(..., MAWConfig(**config), layer_number)``, then every weight loaded
strictly from ``model.safetensors`` (a missing or unexpected tensor is an error).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from sentence_transformers.base.modules import Transformer
from sentence_transformers.util.file_io import load_dir_path, load_file_path
from transformers import AutoModel

CODE_DIR = "maw_code"  # the shipped package
MAW_CONFIG = "maw_config.json"  # {"format_version", "layers": [{"layer": n, "config": {...}}], ...}
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


def import_code(folder: str | Path):
    """Import the ``maw_code`` package of ``folder`` (once per folder and content) and return it.

    Keyed by the folder too, not only the content: the code finds its data files (the C++ kernel
    source) next to its own ``__file__``."""
    folder = Path(folder).resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise FileNotFoundError(f"{folder}: the MAW code package is missing (no __init__.py)")
    digest = hashlib.sha256(str(folder).encode() + b"\0")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    name = f"maw_code_{digest.hexdigest()[:16]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


class MAWTransformer(Transformer):
    """sentence-transformers' ``Transformer`` whose backbone has MAW attention (see the module docstring)."""

    def _load_model(
        self, model_name_or_path, transformer_task, config, backend, is_peft_model, **model_kwargs
    ):
        if backend != "torch":
            raise ValueError(f"MAW models run with the torch backend only, not {backend!r}")
        hub = {
            "subfolder": model_kwargs.get("subfolder", ""),
            "token": model_kwargs.get("token"),
            "cache_folder": model_kwargs.get("cache_dir"),
            "revision": model_kwargs.get("revision"),
            "local_files_only": bool(model_kwargs.get("local_files_only", False)),
        }
        spec_file = load_file_path(model_name_or_path, MAW_CONFIG, **hub)
        weights = load_file_path(model_name_or_path, WEIGHTS, **hub)
        code_dir = load_dir_path(model_name_or_path, str(Path(hub.pop("subfolder") or ".") / CODE_DIR), **hub)
        if spec_file is None or weights is None or code_dir is None:
            raise FileNotFoundError(
                f"{model_name_or_path}: a MAW export needs {MAW_CONFIG}, {WEIGHTS} and {CODE_DIR}/"
            )
        spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{spec_file}: format_version {spec.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        code = import_code(code_dir)
        maw_attention = importlib.import_module(f"{code.__name__}.attention.maw")
        maw_config = importlib.import_module(f"{code.__name__}.config")

        model = AutoModel.from_config(config, add_pooling_layer=False)
        for entry in spec["layers"]:
            number = int(entry["layer"])  # 1-indexed
            attention = model.encoder.layer[number - 1].attention
            cfg = maw_config.MAWConfig(**entry["config"])
            attention.self = maw_attention.MAWSelfAttention.from_bert(
                attention.self, cfg, layer_number=number
            )
        model.load_state_dict(load_file(weights), strict=True)
        self.maw_code_dir = Path(code_dir)
        self.maw_spec = spec
        return model.eval()

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Save like ``Transformer.save`` plus ``maw_config.json`` and the ``maw_code/`` package."""
        super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        out = Path(output_path)
        (out / MAW_CONFIG).write_text(json.dumps(self.maw_spec, indent=2) + "\n", encoding="utf-8")
        if (out / CODE_DIR).resolve() != self.maw_code_dir.resolve():
            shutil.copytree(
                self.maw_code_dir,
                out / CODE_DIR,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )

    def maw_layers(self) -> list[dict[str, Any]]:
        """The MAW layers of this model: ``[{"layer": n, "config": {...}}]`` (1-indexed layers)."""
        return list(self.maw_spec["layers"])
