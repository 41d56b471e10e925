"""Checkpoints: ``run_dir/latest`` (resumable) and ``run_dir/best`` (the selected weights).

A checkpoint folder holds, and nothing in it needs unpickling:

* ``model.safetensors`` — the checkpointed part of the model: every tensor of the trainable
  modules (layers holding a trainable parameter, the embeddings when they train, every MAW module
  with its router and frozen reference router, LoRA adapters with their base layers). The frozen
  rest is rebuilt from the base model named in ``config.json``.
* ``config.json`` — ``plan``: the whole :class:`maw.plan.Plan` that trained it (the model is rebuilt
  from it: ``maw.training.methods.load_trained_encoder``); ``structure``: the plan without its runtime-only fields
  plus the identity of the training data, which a resumed run must match.
* ``training_state.safetensors`` — optimizer state tensors (``optimizer.<param_index>.<name>``),
  the torch CPU RNG state and the CUDA RNG states (``latest`` only).
* ``training_state.json`` — scalars: optimizer param groups (with the parameter names, checked on
  load), scheduler state, GradScaler state, numpy and python RNG states (``latest`` only), and the
  :class:`~maw.training.state.TrainingState` (epoch, step within the epoch, global step, history,
  early-stopping state, the running sums of the epoch in progress).

Writes go to a temporary sibling folder that is renamed into place (the previous folder is
moved aside first and removed after), so a crash leaves either the old or the new checkpoint;
``recover_checkpoint_dir`` puts a moved-aside folder back if a crash hit between the two renames.

Loading into a different configuration raises ``CheckpointError`` listing every differing key
with the saved and the current value (``maw.config.differences``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from maw.config import differences
from maw.data.types import RetrievalDataset, Splits
from maw.plan import Plan
from maw.training.state import TrainingState
from maw.utils.io import atomic_write_json, read_json, staging_dir

FORMAT_VERSION = 2  # 2: config.json holds the plan (maw.plan.Plan)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
REFERENCE_PREFIX = "maw_reference."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or was made with a different configuration."""


# ---------------------------------------------------------------------------------- model tensors
def checkpoint_module_prefixes(encoder: nn.Module) -> list[str]:
    """Names of the modules whose full state is checkpointed (see the module docstring)."""
    prefixes: list[str] = []
    backbone = encoder.backbone
    if any(p.requires_grad for p in backbone.embeddings.parameters()):
        prefixes.append("backbone.embeddings.")
    for i, layer in enumerate(encoder.layers):
        if any(p.requires_grad for p in layer.parameters()):
            prefixes.append(f"backbone.encoder.layer.{i}.")
    from maw.models.maw_encoder import maw_modules

    names = {id(m): n for n, m in encoder.named_modules()}
    for module in maw_modules(encoder):
        name = names[id(module)] + "."
        if not any(name.startswith(p) for p in prefixes):
            prefixes.append(name)
    return prefixes


def model_tensors(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpointed tensors: every state-dict entry under :func:`checkpoint_module_prefixes`."""
    prefixes = tuple(checkpoint_module_prefixes(encoder))
    state = encoder.state_dict()
    extra = {
        n for n, p in encoder.named_parameters() if p.requires_grad
    }  # e.g. a trainable tensor outside layers
    out = {
        k: v.detach().clone().contiguous() for k, v in state.items() if k.startswith(prefixes) or k in extra
    }
    from maw.models.maw_encoder import reference_state

    # GRPO's frozen reference routers are non-persistent buffers (not in state_dict): keep them too
    out.update({f"{REFERENCE_PREFIX}{k}": v.contiguous() for k, v in reference_state(encoder).items()})
    return out


def load_model_tensors(encoder: nn.Module, tensors: dict[str, torch.Tensor], source: str = "") -> None:
    """Copy ``tensors`` into ``encoder``; the key sets must match :func:`model_tensors` exactly."""
    expected = set(model_tensors(encoder))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the checkpoint's tensors do not match this model: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    state = {
        **encoder.state_dict(),
        **{k: v for k, v in model_tensors(encoder).items() if k.startswith(REFERENCE_PREFIX)},
    }
    bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(
            f"{source}: tensor shapes differ: "
            + ", ".join(
                f"{k}: saved {tuple(tensors[k].shape)} vs model {tuple(state[k].shape)}" for k in bad[:10]
            )
        )
    reference = {k[len(REFERENCE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(REFERENCE_PREFIX)}
    with torch.no_grad():
        for k, v in tensors.items():
            if not k.startswith(REFERENCE_PREFIX):
                state[k].copy_(v.to(state[k].device, state[k].dtype))
        if reference:
            from maw.models.maw_encoder import load_reference_state

            load_reference_state(encoder, reference)


# ---------------------------------------------------------------------------------- configs
def checkpoint_config(plan: Plan, dataset: RetrievalDataset, splits: Splits) -> dict[str, Any]:
    """What a checkpoint's ``config.json`` holds: the whole plan (to rebuild the model), and its
    ``structure``: the plan without runtime-only fields plus the identity of the data, which a
    resumed run must match exactly."""
    from maw.utils.io import fingerprint

    return {
        "plan": plan.to_dict(),
        "structure": {
            **plan.structural(),
            "data_identity": {
                "dataset_fingerprint": dataset.fingerprint,
                "train_queries": fingerprint(sorted(splits.train)),
                "val_queries": fingerprint(sorted(splits.val)),
            },
        },
    }


def read_config(folder: str | Path) -> dict[str, Any]:
    """A checkpoint folder's ``config.json`` (errors name the file)."""
    path = Path(folder) / CONFIG_FILE
    try:
        saved = read_json(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (is {folder} a checkpoint folder?)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if saved.get("format_version") != FORMAT_VERSION or "plan" not in saved:
        raise CheckpointError(
            f"{path}: checkpoint format {saved.get('format_version')!r} is not supported (expected "
            f"{FORMAT_VERSION} with a 'plan'); it was written by another version of maw"
        )
    return saved


def check_config(folder: str | Path, current: dict[str, Any]) -> dict[str, Any]:
    """Read ``folder/config.json``; raise CheckpointError listing how its structure differs from ``current``'s."""
    saved = read_config(folder)
    diffs = differences(saved["structure"], current["structure"])
    if diffs:
        raise CheckpointError(
            f"{folder}: the checkpoint was made with a different configuration:\n  " + "\n  ".join(diffs)
        )
    return saved


# ---------------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) capturing the torch CPU/CUDA, numpy and python RNGs."""
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    js = {
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    return tensors, js


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    n = js["numpy"]
    np.random.set_state(
        (n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = js["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# ---------------------------------------------------------------------------------- optimizer
def optimizer_state(
    optimizer: torch.optim.Optimizer, param_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors and JSON scalars (with the parameter names)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "param_names": param_names}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    js: dict,
    param_names: list[str],
    source: str,
) -> None:
    if js["param_names"] != param_names:
        diff = differences({"params": js["param_names"]}, {"params": param_names})
        raise CheckpointError(f"{source}: the optimizer's parameters differ from this model's: {diff[:5]}")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, sc in js["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": state, "param_groups": js["param_groups"]})


# ---------------------------------------------------------------------------------- folders
def recover_checkpoint_dir(folder: str | Path) -> None:
    """If a crash happened between the two renames of :func:`_replace_dir`, restore the old folder."""
    folder = Path(folder)
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.exists():
        os.rename(old, folder)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    for junk in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(junk, ignore_errors=True)


def _replace_dir(tmp: Path, folder: Path) -> None:
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(
    folder: str | Path,
    encoder: nn.Module,
    config: dict,
    state: TrainingState,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    param_names: list[str] | None = None,
    include_rng: bool = True,
) -> None:
    """Write a checkpoint folder atomically (model, config, and the training state if given)."""
    folder = Path(folder)
    tmp = staging_dir(folder.parent, prefix=f".{folder.name}.")
    try:
        save_file(model_tensors(encoder), str(tmp / MODEL_FILE), metadata={"format": str(FORMAT_VERSION)})
        atomic_write_json(tmp / CONFIG_FILE, {**config, "format_version": FORMAT_VERSION})
        tensors: dict[str, torch.Tensor] = {}
        js: dict[str, Any] = {"state": state.to_dict()}
        if optimizer is not None:
            opt_t, opt_js = optimizer_state(optimizer, param_names or [])
            tensors.update(opt_t)
            js["optimizer"] = opt_js
        if scheduler is not None:
            js["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            js["scaler"] = scaler.state_dict()
        if include_rng:
            rng_t, rng_js = rng_state()
            tensors.update(rng_t)
            js["rng"] = rng_js
        save_file(tensors or {"empty": torch.zeros(0)}, str(tmp / STATE_TENSORS))
        atomic_write_json(tmp / STATE_JSON, js, indent=None)
        _fsync_dir(tmp)
        _replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(
    folder: str | Path,
    encoder: nn.Module,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    param_names: list[str] | None = None,
    restore_rng: bool = True,
) -> TrainingState:
    """Check the config, load weights (and optimizer / scheduler / scaler / RNG when given)."""
    folder = Path(folder)
    check_config(folder, config)
    try:
        tensors = load_file(str(folder / MODEL_FILE))
        st_tensors = load_file(str(folder / STATE_TENSORS))
        js = read_json(folder / STATE_JSON)
    except (OSError, json.JSONDecodeError, Exception) as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{folder}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    load_model_tensors(encoder, tensors, str(folder / MODEL_FILE))
    if optimizer is not None:
        if "optimizer" not in js:
            raise CheckpointError(f"{folder}: holds no optimizer state (not a resumable checkpoint)")
        load_optimizer_state(optimizer, st_tensors, js["optimizer"], param_names or [], str(folder))
    if scheduler is not None and "scheduler" in js:
        scheduler.load_state_dict(js["scheduler"])
    if scaler is not None and "scaler" in js:
        scaler.load_state_dict(js["scaler"])
    if restore_rng and "rng" in js:
        set_rng_state(st_tensors, js["rng"])
    return TrainingState.from_dict(js["state"])


def load_weights(folder: str | Path, encoder: nn.Module) -> None:
    """Load only the model tensors of a checkpoint into ``encoder``."""
    folder = Path(folder)
    try:
        tensors = load_file(str(folder / MODEL_FILE))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{folder / MODEL_FILE}: cannot read ({type(exc).__name__}: {exc})") from None
    load_model_tensors(encoder, tensors, str(folder / MODEL_FILE))


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder from what a user names: the folder itself, or a run folder (its ``best``).

    A Hugging Face model folder also has ``config.json`` + ``model.safetensors``; only a maw
    checkpoint has ``training_state.json`` (``save_checkpoint`` always writes it)."""
    path = Path(path)
    files = (CONFIG_FILE, MODEL_FILE, STATE_JSON)
    if all((path / f).is_file() for f in files):
        return path
    if all((path / "best" / f).is_file() for f in files):
        return path / "best"
    raise CheckpointError(
        f"{path}: not a maw checkpoint (no {' + '.join(files)}) nor a `maw train` run folder (no best/)"
    )
