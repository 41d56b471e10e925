"""Export a trained checkpoint as a sentence-transformers model folder (``maw export``).

``export_sentence_transformers(checkpoint_dir, out_dir) -> out_dir`` writes a folder that

    SentenceTransformer(out_dir, trust_remote_code=True)      # or a Hub id after uploading it

loads and encodes with, giving the same embeddings as maw's own ``Encoder.encode`` (checked at export
time on probe texts, to ``TOLERANCE`` max abs difference). The folder, in sentence-transformers'
module format (``modules.json``):

* ``0``: the encoder -- ``config.json``, ``model.safetensors`` (all weights), tokenizer files,
  ``sentence_bert_config.json`` (``max_seq_length`` = the doc max length, ``query_length`` /
  ``document_length`` for ``encode_query`` / ``encode_document``). For ``lora`` the adapters are
  merged into the weights (PEFT ``merge``), so ``lora`` / ``finetune`` / ``full`` export as a plain
  BERT (sentence-transformers' own ``Transformer`` module, no remote code). For ``maw`` the module
  is ``modeling_maw.MAWTransformer`` (:mod:`maw.export.st_module`) and the folder ships the MAW code
  it runs: ``maw_code/``, a copy of the installed ``maw.attention`` (``maw.py``, ``routers.py``,
  ``soft_pair_kernel.py``, ``kernels/*.cpp``) and what it imports from ``maw`` (``maw.config``),
  taken at export time, with the ``maw`` imports rewritten as relative ones (:func:`ship_maw_code`)
  -- the folder works where ``maw`` is not installed. ``maw_config.json`` lists the MAW layers.
* ``1_Pooling``: mean pooling over non-padding tokens; ``2_Normalize``: L2 normalisation (when the
  model normalises; similarity ``cosine``, else ``dot``).
* ``config_sentence_transformers.json`` (no prompts) with both max lengths under ``"maw"``, and
  ``README.md``, the model card (:mod:`maw.export.model_card`).

The folder is built beside ``out_dir``, renamed onto it and verified there; an existing export at
``out_dir`` is replaced (and put back if verification fails), any other existing folder is refused.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.utils.io import atomic_write_json, read_json, staging_dir

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # max abs difference of the export's embeddings from maw's own, checked at export
MODULE_FILE = "modeling_maw.py"
MODULE_CLASS = "modeling_maw.MAWTransformer"
CODE_DIR = "maw_code"
MAW_CONFIG = "maw_config.json"
MAW_FORMAT_VERSION = 1
# what the exported MAW code starts from; everything it imports from maw comes along (ship_maw_code)
MAW_ROOTS = ("maw.attention.maw", "maw.attention.routers", "maw.attention.soft_pair_kernel")
PROBE_TEXTS = (
    "what is multi-attention-weight attention",
    "Dense retrieval encodes queries and documents into vectors; the nearest documents are returned.",
    "a",
    " ".join(["a long document that is cut at the maximum length"] * 60),
)


class ExportError(ValueError):
    """The checkpoint cannot be exported (the message names the file or the reason)."""


# the export extra (pyproject.toml): the sentence_transformers module paths used here and in
# st_module.py (base.modules.Normalize) are those of 6.x
ST_VERSIONS = ((6, 0), (7, 0))  # [lowest, first excluded)
INSTALL_HINT = "pip install 'maw[export]'"


def require_sentence_transformers() -> str:
    """The installed sentence-transformers version; ExportError naming the ``export`` extra when it
    is missing or outside the supported versions."""
    import re

    try:
        import sentence_transformers
    except ImportError:
        raise ExportError(
            f"maw export needs sentence-transformers (the 'export' extra), which is not installed: {INSTALL_HINT}"
        ) from None
    version = str(getattr(sentence_transformers, "__version__", "0"))
    parts = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    (lo, hi) = ST_VERSIONS
    if not lo <= parts < hi:
        raise ExportError(
            f"maw export needs sentence-transformers >= {lo[0]}.{lo[1]}, < {hi[0]}, found {version}: {INSTALL_HINT}"
        )
    return version


# ---------------------------------------------------------------------------------------------- MAW code
def _package_root() -> Path:
    import maw

    return Path(maw.__file__).resolve().parent


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module ``maw.x.y`` under ``root`` (``x/y.py`` or ``x/y/__init__.py``), or None."""
    parts = name.split(".")[1:]
    if not parts:
        return root / "__init__.py"
    path = root.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _maw_imports(tree: ast.AST, module: str, is_package: bool, source: str) -> list[tuple[ast.AST, str]]:
    """``(node, absolute target)`` of every import of ``maw`` in a module (any depth, relative too)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "maw" or alias.name.startswith("maw."):
                    raise ExportError(
                        f"{source}:{node.lineno}: 'import {alias.name}' cannot be made relative; "
                        "use 'from maw.x import y' in code the export ships"
                    )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "maw" or target.startswith("maw."):
                out.append((node, target))
    return out


def _relative(node: ast.ImportFrom, target: str, module: str, is_package: bool) -> str:
    """``from <relative target> import <names>`` for an import in ``module``."""
    package = (module if is_package else module.rsplit(".", 1)[0]).split(".")
    target_parts = target.split(".")
    common = 0
    while common < min(len(package), len(target_parts)) and package[common] == target_parts[common]:
        common += 1
    dots = "." * (len(package) - common + 1)
    rest = ".".join(target_parts[common:])
    names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
    return f"from {dots}{rest} import {names}"


def _rewrite(source: str, edits: list[tuple[ast.AST, str]]) -> str:
    """Replace each node's source span by its new text (bottom-up, so offsets stay valid)."""
    lines = source.splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(line) for line in lines])
    text = source
    for node, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        text = text[:start] + new + text[end:]
    return text


def ship_maw_code(dest: str | Path, roots: Sequence[str] = MAW_ROOTS) -> list[str]:
    """Copy the installed ``maw`` modules ``roots`` and everything they import from ``maw`` into the
    package folder ``dest`` (same layout: ``dest/attention/maw.py``, ``dest/config.py``, ...), with
    every ``maw`` import rewritten as a relative one, plus ``attention/kernels/``. Returns the copied
    paths (relative to ``dest``). ``dest/__init__.py`` is a stub (maw's own imports nothing needed).

    Reads the source at call time, so it ships the code that is installed now.
    """
    root = _package_root()
    dest = Path(dest)
    queue, seen, copied = list(roots), set(), []
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        # a module's parent packages run first on import: ship their __init__ too (not maw's own)
        parts = name.split(".")
        queue += [".".join(parts[:i]) for i in range(2, len(parts))]
        path = _module_file(root, name)
        if path is None:
            raise ExportError(f"cannot find module {name!r} under {root}")
        if name == "maw":
            continue
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        imports = _maw_imports(ast.parse(source, str(path)), name, is_package, str(path))
        edits = []
        for node, target in imports:
            queue.append(target)
            for alias in node.names:  # "from maw.attention import soft_pair_kernel": a submodule
                if _module_file(root, f"{target}.{alias.name}") is not None:
                    queue.append(f"{target}.{alias.name}")
            edits.append((node, _relative(node, target, name, is_package)))
        rel = path.relative_to(root)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(_rewrite(source, edits), encoding="utf-8")
        copied.append(rel.as_posix())
    kernels = root / "attention" / "kernels"
    if kernels.is_dir():
        for f in sorted(kernels.iterdir()):
            if f.is_file():
                (dest / "attention" / "kernels").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest / "attention" / "kernels" / f.name)
                copied.append(f"attention/kernels/{f.name}")
    from maw import __version__

    (dest / "__init__.py").write_text(
        f'"""MAW attention code shipped with an exported model: a copy of maw {__version__}\'s '
        'own modules, imports made relative (see modeling_maw.py)."""\n',
        encoding="utf-8",
    )
    for path in dest.rglob("*.py"):  # nothing may still import the maw package
        name = "maw." + ".".join(path.relative_to(dest).with_suffix("").parts).removesuffix(".__init__")
        left = _maw_imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", "")
        if any(node.level == 0 for node, _ in left):
            raise ExportError(f"{path}: still imports maw after rewriting")
    return sorted(copied)


# ---------------------------------------------------------------------------------------------- model
def _checkpoint_folder(path: Path) -> Path:
    """The checkpoint folder ``path`` names, by the one rule of ``maw.training.checkpoint``."""
    from maw.training.checkpoint import CheckpointError, checkpoint_folder

    try:
        return checkpoint_folder(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None


def _load(folder: Path):
    from maw.training.methods import load_trained_encoder

    loaded = load_trained_encoder(folder)
    return loaded[0], loaded[-1]  # (encoder, ..., the folder's config.json)


def _plan(saved: dict) -> dict:
    return saved.get("plan") or saved.get("structure") or {}


def max_lengths(saved: dict, source: str) -> tuple[int, int]:
    """(query, doc) max lengths of a checkpoint's config.json (its plan's model settings)."""
    model = _plan(saved).get("model", {})
    q, d = model.get("query_max_length"), model.get("doc_max_length")
    if not q or not d:
        raise ExportError(f"{source}: the checkpoint's plan has no model query_max_length / doc_max_length")
    return int(q), int(d)


def merge_lora(backbone: torch.nn.Module) -> int:
    """Merge every PEFT LoRA adapter into its base layer and put the base layer back (in place).
    Returns the number of merged layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)  # raises on non-finite merged weights
            parent_name, _, child = name.rpartition(".")
            setattr(
                backbone.get_submodule(parent_name) if parent_name else backbone,
                child,
                module.get_base_layer(),
            )
            merged += 1
    left = [n for n, _ in backbone.named_parameters() if "lora_" in n]
    if left:
        raise ExportError(f"LoRA parameters left after merging: {left[:5]}")
    return merged


def _maw_spec(encoder) -> dict[str, Any]:
    from maw.models.maw_encoder import maw_modules

    layers = [{"layer": m.layer_number, "config": dataclasses.asdict(m.cfg)} for m in maw_modules(encoder)]
    return {"format_version": MAW_FORMAT_VERSION, "layers": sorted(layers, key=lambda e: e["layer"])}


def check_family(encoder) -> None:
    """Raise ExportError for MAW in an encoder family the shipped module cannot rebuild.

    ``modeling_maw.MAWTransformer`` (:mod:`maw.export.st_module`) puts MAW into ``attention.self`` of
    BERT-family layers only; an MPNet or DistilBERT model with MAW would load there as the plain
    model. Plain exports (lora, finetune, full) are Hugging Face weights and work for every family.
    """
    from maw.models.maw_encoder import maw_modules

    family = encoder.family.name
    if maw_modules(encoder) and family != "bert":
        raise ExportError(
            f"maw export: MAW in a {family} encoder cannot be exported to sentence-transformers yet "
            f"(the exported MAW module supports the bert family only); lora, finetune and full "
            f"checkpoints of {family} models export"
        )


def _name_config(out: Path, name: str) -> None:
    """Set ``_name_or_path`` of ``out/config.json`` (transformers leaves it out when saving): the
    backbone's Hub id, else its name, never a local path (see ``maw.export.model_card.model_name``)."""
    path = out / "config.json"
    config = read_json(path)
    atomic_write_json(
        path, {"_name_or_path": name, **{k: v for k, v in config.items() if k != "_name_or_path"}}
    )


def _write_encoder(
    encoder, out: Path, doc_max_length: int, query_max_length: int, name: str | None = None
) -> dict[str, Any]:
    """Module 0 into ``out``; returns what the card reports (``kind``, MAW spec, shipped files).
    ``name``: the ``_name_or_path`` written into config.json (the backbone's Hub id or name)."""
    from safetensors.torch import save_file

    backbone = encoder.backbone
    info: dict[str, Any] = {"kind": "plain"}
    merged = merge_lora(backbone)
    if merged:
        info["lora_merged_layers"] = merged
    spec = _maw_spec(encoder)
    if spec["layers"]:
        info.update(kind="maw", maw=spec)
        backbone.config.save_pretrained(out)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        atomic_write_json(out / MAW_CONFIG, spec)
        info["shipped"] = ship_maw_code(out / CODE_DIR)
        shutil.copyfile(Path(__file__).with_name("st_module.py"), out / MODULE_FILE)
    else:
        backbone.save_pretrained(out, safe_serialization=True)
    if name:
        _name_config(out, name)
    tokenizer = encoder.tokenizer
    previous = tokenizer.model_max_length
    tokenizer.model_max_length = doc_max_length
    try:
        tokenizer.save_pretrained(out)
    finally:
        tokenizer.model_max_length = previous
    st_config: dict[str, Any] = {
        "transformer_task": "feature-extraction",
        "max_seq_length": doc_max_length,
        "query_length": query_max_length,
        "document_length": doc_max_length,
        "do_lower_case": False,
    }
    if getattr(backbone, "pooler", "absent") is None:  # maw drops the pooler: do not build a random one
        st_config["model_kwargs"] = {"add_pooling_layer": False}
    atomic_write_json(out / "sentence_bert_config.json", st_config)
    return info


def _write_st_files(out: Path, dim: int, normalize: bool, info: dict, lengths: tuple[int, int]) -> None:
    import sentence_transformers
    import transformers
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling

    first = (
        MODULE_CLASS
        if info["kind"] == "maw"
        else "sentence_transformers.base.modules.transformer.Transformer"
    )
    modules = [{"idx": 0, "name": "0", "path": "", "type": first}]
    (out / "1_Pooling").mkdir()
    Pooling(dim, pooling_mode="mean").save(str(out / "1_Pooling"))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{Pooling.__module__}.Pooling"})
    if normalize:
        (out / "2_Normalize").mkdir()
        Normalize().save(str(out / "2_Normalize"))
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": f"{Normalize.__module__}.Normalize"}
        )
    atomic_write_json(out / "modules.json", modules)
    atomic_write_json(
        out / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "__version__": {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "pytorch": torch.__version__,
            },
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if normalize else "dot",
            "maw": {"method": info["method"], "query_max_length": lengths[0], "doc_max_length": lengths[1]},
        },
    )


def verify_export(folder: str | Path, expected: np.ndarray, texts: Sequence[str] = PROBE_TEXTS) -> float:
    """Load ``folder`` with sentence-transformers and return the max abs difference of its embeddings
    of ``texts`` from ``expected`` (maw's, (N, d)); raises ExportError above ``TOLERANCE``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu", local_files_only=True)
    theirs = model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True)
    diff = float(np.abs(theirs - expected).max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"{folder}: the export's embeddings differ from maw's by {diff:.3g} (> {TOLERANCE})"
        )
    return diff


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "modules.json").is_file())):
        raise ExportError(f"{out}: exists and is not a sentence-transformers export; not overwriting it")


def _install(tmp: Path, out: Path, verify) -> None:
    """Rename ``tmp`` onto ``out`` and run ``verify(out)``; an old export there is moved aside first and
    put back if ``verify`` fails. Verifying in place means the C++ kernel of a MAW export is built
    from the folder's final path (torch's build cache is keyed by the source path)."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    _check_target(out)
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    try:
        verify(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if old.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_sentence_transformers(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    *,
    evaluation: str | Path | None = None,
    run_result: str | Path | None = None,
    model_id: str | None = None,
) -> Path:
    """Write the sentence-transformers folder of a checkpoint (``RUN/best``, ``RUN/latest`` or ``RUN``).

    ``evaluation``: a ``maw evaluate --model RUN/best`` result JSON whose metrics (with 95% CIs) go in
    the card; ``run_result``: the run's ``result.json`` (default: the one beside the checkpoint
    folder, when there is one) for the data, the validation history and the library versions;
    ``model_id``: the Hub id the card shows in its usage snippet. Returns ``out_dir``.
    """
    from maw.export.model_card import model_name, write_model_card

    require_sentence_transformers()
    folder = _checkpoint_folder(Path(checkpoint_dir))
    out = Path(out_dir)
    _check_target(out)
    if run_result is None and (folder.parent / "result.json").is_file():
        run_result = folder.parent / "result.json"
    result = read_json(run_result) if run_result else None
    eval_record = read_json(evaluation) if evaluation else None

    encoder, saved = _load(folder)
    check_family(encoder)
    lengths = max_lengths(saved, str(folder / "config.json"))
    expected = encoder.encode(list(PROBE_TEXTS), lengths[1], batch_size=len(PROBE_TEXTS))  # before any merge
    tmp = staging_dir(out.parent, prefix=f".{out.name}.")
    try:
        hub_id, shown = model_name(_plan(saved))
        info = _write_encoder(
            encoder, tmp, doc_max_length=lengths[1], query_max_length=lengths[0], name=hub_id or shown
        )
        info["method"] = _plan(saved).get("method")
        _write_st_files(tmp, encoder.hidden_size, encoder.normalize, info, lengths)

        def verify(folder: Path) -> None:
            info["max_abs_diff"] = verify_export(folder, expected)
            write_model_card(
                folder, saved, info, lengths, run_result=result, evaluation=eval_record, model_id=model_id
            )

        _install(tmp, out, verify)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s (max abs diff %.2g)", folder, out, info["max_abs_diff"])
    return out


__all__ = [
    "ExportError",
    "export_sentence_transformers",
    "max_lengths",
    "merge_lora",
    "require_sentence_transformers",
    "ship_maw_code",
]
