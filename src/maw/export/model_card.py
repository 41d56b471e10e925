"""The model card (``README.md``) of an exported model, in the Hugging Face convention.

YAML front matter (``library_name``, ``pipeline_tag``, ``tags``, ``base_model``, ``datasets``,
``metrics``), then: what the model is, how to load it, the training configuration, the data, the
metrics, the library versions and the files. Every number comes from the files given: the
checkpoint's ``config.json`` (the plan), the run's ``result.json`` (data provenance, validation
history, versions) and, when given, a ``maw evaluate`` result JSON (metrics; the 95% interval of
each is the t interval of its per-query scores in that file, ``maw.benchmark.significance.mean_ci``).
A section whose file was not given says so instead of showing a number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from maw.evaluation.metrics import PRIMARY_METRICS
from maw.utils.io import atomic_write_text

TAGS = ["sentence-transformers", "feature-extraction", "maw", "dense-retrieval"]
DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"  # maw.config.default_model()
MAW_FIELDS = (
    "depth_dim",
    "router",
    "granularity",
    "depth_projection",
    "parametrisation",
    "router_hidden",
    "tau",
    "policy_lr",
)
TITLES = {
    "maw": "MAW attention",
    "lora": "LoRA (merged)",
    "finetune": "fine-tuned layers",
    "full": "fully fine-tuned",
}


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")  # namespace/name


def is_hub_id(name: str) -> bool:
    """``namespace/name`` as the Hub spells repository ids, and not a folder here."""
    return bool(HUB_ID.match(name)) and ".." not in name and not Path(name).exists()


def model_name(plan: dict) -> tuple[str | None, str]:
    """(Hub id or None, the name to show) of a plan's backbone; never a local path.

    The default backbone is sentence-transformers/all-MiniLM-L6-v2. A local folder is named by the
    ``_name_or_path`` of its config.json when that is a Hub id (a downloaded or saved copy of a Hub
    model), else by the folder's own name. Anything else given to ``--model`` is a Hub id.
    """
    model = plan.get("model", {})
    if model.get("model_is_default"):
        return DEFAULT_BASE, DEFAULT_BASE
    name = str(model.get("model") or "")
    if not name:
        return None, "?"
    if is_hub_id(name):
        return name, name
    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            origin = str(
                json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path") or ""
            )
        except (OSError, ValueError):
            origin = ""
        if is_hub_id(origin):
            return origin, origin
    return None, folder.name or name


def _base_model(plan: dict) -> str | None:
    """The Hub id of the backbone (the card's ``base_model``), or None when it has none."""
    return model_name(plan)[0]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics_section(evaluation: dict | None, run_result: dict | None) -> tuple[str, list[str]]:
    """(markdown, metric names for the front matter)."""
    if evaluation is not None:
        from maw.benchmark.significance import mean_ci

        ds = evaluation.get("dataset", {})
        per_query = evaluation.get("per_query", {})
        rows, names = [], []
        for name in PRIMARY_METRICS:
            value = evaluation.get("metrics", {}).get(name)
            scores = [v for v in per_query.get(name, {}).values() if v is not None]
            if value is None:
                continue
            names.append(name)
            if scores:
                _, lo, hi = mean_ci(scores)
                rows.append([name, value, f"[{lo:.4f}, {hi:.4f}]", str(len(scores))])
            else:
                rows.append([name, value, "- (no per-query scores in the file)", "-"])
        text = (
            f"`maw evaluate` on **{ds.get('name', '?')}**, split `{ds.get('split', '?')}` "
            f"({ds.get('num_evaluated_queries', '?')} judged queries, {ds.get('num_docs', '?')} documents, "
            f"full-corpus exact search). 95% CI: t interval of the mean over the per-query scores.\n\n"
            + _table(["metric", "value", "95% CI", "queries"], rows)
        )
        return text, names
    history = (run_result or {}).get("history") or []
    if history:
        names = [n for n in PRIMARY_METRICS if any(n in (h.get("val") or {}) for h in history)]
        rows = [[str(h.get("epoch")), *[(h.get("val") or {}).get(n) for n in names]] for h in history]
        best = (run_result or {}).get("best_epoch")
        text = (
            "No test-set evaluation was given to the export (`maw export --evaluation FILE`), so these are "
            f"the **validation** scores by epoch (epoch 0 = before training; selected epoch: {best}). The "
            "history holds no per-query scores, so no confidence interval is shown.\n\n"
            + _table(["epoch", *[f"val {n}" for n in names]], rows)
        )
        return text, names
    return "No evaluation result and no training history were given; no metric is reported.", []


def _runtime_fields() -> set[str]:
    """TrainConfig fields that say where and how fast, not what (``metadata["runtime"]``)."""
    import dataclasses

    from maw.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("runtime")}


def _training_section(plan: dict, info: dict, run_result: dict | None) -> str:
    method = plan.get("method")
    layers = plan.get("layers") or {}
    lines = [f"- method: `{method}`"]
    if layers:
        if layers.get("trainable"):
            lines.append(f"- layers (1-indexed) whose weights trained: {list(layers['trainable'])}")
        if layers.get("maw"):
            lines.append(f"- MAW layers: {list(layers['maw'])}")
        if layers.get("lora"):
            lines.append(f"- LoRA layers: {list(layers['lora'])} (merged into the weights of this export)")
    for entry in (info.get("maw") or {}).get("layers", []):
        cfg = entry["config"]
        lines.append(
            f"- MAW layer {entry['layer']}: "
            + ", ".join(f"{k} = `{cfg.get(k)}`" for k in MAW_FIELDS if k in cfg)
        )
    text = "\n".join(lines)
    train = {k: v for k, v in (plan.get("train") or {}).items() if k not in _runtime_fields()}
    if method != "lora":
        train = {k: v for k, v in train.items() if not k.startswith("lora_")}
    if train:
        text += "\n\nRecipe (`maw train`; InfoNCE with in-batch and BM25-mined hard negatives):\n\n"
        text += _table(["setting", "value"], [[f"`{k}`", f"`{v}`"] for k, v in train.items()])
    if run_result:
        text += (
            f"\n\nSelected epoch: {run_result.get('best_epoch')} (validation "
            f"{run_result.get('selection_metric', 'nDCG@10')} = {_fmt(run_result.get('best_score'))}); "
            f"training time {_fmt(run_result.get('train_seconds'))} s."
        )
    return text


def _data_section(plan: dict, saved: dict, run_result: dict | None) -> tuple[str, list[str]]:
    ds = (run_result or {}).get("dataset") or {}
    identity = (saved.get("structure") or {}).get("data_identity") or {}
    name = ds.get("name") or (plan.get("data") or {}).get("dataset")
    lines = [f"- dataset: `{name}`" if name else "- dataset: not recorded"]
    fp = ds.get("fingerprint") or identity.get("dataset_fingerprint")
    if fp:
        lines.append(f"- dataset fingerprint (content hash of its files): `{fp}`")
    for key in ("train_queries", "val_queries"):
        if identity.get(key):
            lines.append(f"- {key.replace('_', ' ')} fingerprint (hash of the sorted ids): `{identity[key]}`")
    prov = ds.get("provenance") or {}
    for split in ("train", "val", "test"):
        if split in prov:
            p = prov[split]
            detail = ", ".join(f"{k} = {v}" for k, v in p.items() if k != "queries")
            lines.append(f"- {split}: {p.get('queries', '?')} queries ({detail})")
    if not prov:
        lines.append("- split provenance: not given (no run `result.json`)")
    return "\n".join(lines), [name] if name else []


def _versions_section(run_result: dict | None, evaluation: dict | None) -> str:
    import sentence_transformers
    import torch
    import transformers

    from maw import __version__

    rows = [
        [
            "export",
            f"maw {__version__}, sentence-transformers {sentence_transformers.__version__}, "
            f"transformers {transformers.__version__}, torch {torch.__version__}",
        ]
    ]
    for label, record in (("training", run_result), ("evaluation", evaluation)):
        versions = (record or {}).get("versions")
        if versions:
            rows.append(
                [label, ", ".join(f"{k} {v}" for k, v in versions.items() if not isinstance(v, dict))]
            )
    return _table(["step", "versions"], rows)


def model_card(
    saved: dict,
    info: dict,
    lengths: tuple[int, int],
    run_result: dict | None = None,
    evaluation: dict | None = None,
    model_id: str | None = None,
) -> str:
    """The card's text. ``saved``: the checkpoint's config.json; ``info``: what the export wrote
    (``kind``, ``method``, ``maw`` spec, ``max_abs_diff``); ``lengths``: (query, doc) max lengths."""
    plan = saved.get("plan") or saved.get("structure") or {}
    method = plan.get("method", "?")
    base = _base_model(plan)
    metrics_text, metric_names = _metrics_section(evaluation, run_result)
    data_text, datasets = _data_section(plan, saved, run_result)
    maw = info.get("kind") == "maw"

    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "tags:"]
    front += [f"- {t}" for t in TAGS]
    if base:
        front.append(f"base_model: {_yaml_scalar(base)}")
    if datasets:
        front += ["datasets:", *[f"- {_yaml_scalar(d)}" for d in datasets]]
    if metric_names:
        front += ["metrics:", *[f"- {_yaml_scalar(m)}" for m in metric_names]]
    front.append("---")

    where = model_id or "path/to/this/folder"
    backbone = model_name(plan)[1]  # a Hub id or a folder's name: never a local path
    what = (
        f"A dense retriever: `{backbone}` fine-tuned with maw's `{method}` method"
        + (
            ", with **Multi-Attention-Weight (MAW)** self-attention in some layers (see below)"
            if maw
            else " (a plain BERT encoder; LoRA adapters, if any, are merged into the weights)"
        )
        + f". It maps a text to a {'unit-length ' if plan.get('model', {}).get('normalize', True) else ''}"
        "vector (mean pooling over tokens); rank documents by the dot product (= cosine) with the query's. "
        f"Max lengths: queries {lengths[0]} tokens, documents {lengths[1]} tokens "
        "(`max_seq_length` is the document length; `encode_query` uses the query length)."
    )
    if maw:
        what += (
            "\n\nMAW splits each attention head's query and key into D depth slices and a learned router "
            "mixes the per-depth scores (`A = D * sum_d w_d * S_d`). The code runs from `maw_code/` in this "
            "folder (a copy of maw's own `maw.attention` and `maw.config`), so the `maw` package is not "
            "needed; loading therefore needs `trust_remote_code=True`. On CPU the pair-granularity soft "
            "router compiles a C++ kernel on first use (needs a C++ compiler with OpenMP; without one "
            "a slower PyTorch path gives the same results)."
        )
    if info.get("max_abs_diff") is not None:
        what += (
            f"\n\nChecked at export: sentence-transformers' embeddings of this folder differ from maw's "
            f"own encoder by at most {info['max_abs_diff']:.2g} (max abs) on probe texts."
        )
    usage = (
        "```python\nfrom sentence_transformers import SentenceTransformer\n\n"
        f'model = SentenceTransformer("{where}"' + (", trust_remote_code=True" if maw else "") + ")\n"
        'queries = model.encode_query(["what is dense retrieval"])\n'
        'docs = model.encode_document(["Dense retrieval encodes texts into vectors.", "Bananas are yellow."])\n'
        "print(model.similarity(queries, docs))\n```"
    )
    files = [
        "- `modules.json`, `config_sentence_transformers.json`, `sentence_bert_config.json`: the "
        "sentence-transformers pipeline (encoder, `1_Pooling` mean, `2_Normalize`)",
        "- `config.json`, `model.safetensors`, tokenizer files: the encoder",
    ]
    if maw:
        files += [
            f"- `modeling_maw.py`: the module class; `maw_config.json`: the MAW layers and their settings; "
            f"`maw_code/`: the MAW code ({len(info.get('shipped', []))} files)",
        ]
    sections = [
        "\n".join(front),
        f"# {backbone.rsplit('/', 1)[-1]} + {TITLES.get(method, method)}"
        + (f", trained on {datasets[0]}" if datasets else "")
        + " (maw)",
        what,
        "## Usage\n\n" + usage,
        "## Training\n\n" + _training_section(plan, info, run_result),
        "## Data\n\n" + data_text,
        "## Metrics\n\n" + metrics_text,
        "## Library versions\n\n" + _versions_section(run_result, evaluation),
        "## Files\n\n" + "\n".join(files),
    ]
    return "\n\n".join(sections) + "\n"


def write_model_card(folder: str | Path, saved: dict, info: dict, lengths: tuple[int, int], **kwargs) -> Path:
    """Write :func:`model_card` to ``folder/README.md`` (atomically); returns the path."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, model_card(saved, info, lengths, **kwargs))
    return path


__all__ = ["is_hub_id", "model_card", "model_name", "write_model_card"]
