"""The Python API: three calls over the internals the ``maw`` command runs.

::

    import maw

    encoder = maw.load_encoder("runs/demo-maw")  # a `maw train` run, RUN/best, an export, or a Hub model
    vectors = encoder.encode(["what is dense retrieval?"], batch_size=32)  # (1, d) float32, unit length

    model = maw.inject_maw(hf_model, depth_dim=4, router="soft", maw_layers="last")  # in place

    metrics = maw.evaluate("runs/demo-maw", dataset="demo")  # {"nDCG@10": ..., "R@100": ..., ...}

Option names are the command line's (``--depth-dim`` is ``depth_dim``): :mod:`maw.config` defines
them once, with their defaults. ``maw.evaluate`` is ``maw evaluate`` (same plan, same JSON record
when ``out`` is given); :func:`load_encoder` reads a checkpoint with
``maw.training.methods.load_trained_encoder`` and an export folder (``maw export``) without
sentence-transformers.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TextEncoder", "evaluate", "inject_maw", "load_encoder"]


@dataclasses.dataclass
class TextEncoder:
    """A loaded retriever encoder: texts in, L2-normalised float32 vectors out.

    ``encoder``: the :class:`maw.models.encoder.Encoder` (a torch module); ``query_max_length`` /
    ``doc_max_length``: the token limits it was trained and evaluated with; ``plan``: the training
    plan of a ``maw train`` checkpoint (None otherwise); ``source``: what it was loaded from.
    """

    encoder: Any
    query_max_length: int
    doc_max_length: int
    source: str
    plan: Any = None

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        *,
        kind: str = "document",
        max_length: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
    ):
        """Embeddings of ``texts``: a float32 array ``(len(texts), d)`` (``(d,)`` for one string).

        ``kind``: "document" or "query" (sets the max length: ``doc_max_length`` or
        ``query_max_length``, unless ``max_length`` is given). ``normalize``: unit length, so the dot
        product is the cosine (maw models are trained normalised; then this changes nothing).
        """
        import numpy as np

        if kind not in ("document", "query"):
            raise ValueError(f"kind: 'document' or 'query', got {kind!r}")
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if max_length is None:
            max_length = self.doc_max_length if kind == "document" else self.query_max_length
        out = self.encoder.encode(items, max_length, batch_size=batch_size, show_progress=show_progress)
        if normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def encode_queries(self, texts: str | Sequence[str], **kwargs: Any):
        """:meth:`encode` with the query max length."""
        return self.encode(texts, kind="query", **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs: Any):
        """:meth:`encode` with the document max length."""
        return self.encode(texts, kind="document", **kwargs)

    def to(self, device: str) -> TextEncoder:
        """Move the model to ``device`` ("cpu", "cuda", ...); returns self."""
        self.encoder.to(device)
        return self


# ---------------------------------------------------------------------------------------------- loading
def trained_checkpoint(model: str | Path | None) -> Path | None:
    """The checkpoint folder when ``model`` names a ``maw train`` checkpoint or run folder, else None."""
    from maw.training.checkpoint import CheckpointError, checkpoint_folder

    if not model or not Path(model).is_dir():
        return None
    try:
        return checkpoint_folder(model)
    except CheckpointError:
        return None  # a plain Hugging Face model folder, or an export


def is_export(path: str | Path | None) -> bool:
    """Whether ``path`` is a sentence-transformers folder (``maw export`` writes one)."""
    return (
        bool(path)
        and (Path(path) / "modules.json").is_file()
        and (Path(path) / "sentence_bert_config.json").is_file()
    )


def _load_export(folder: Path, device: str | None = None) -> TextEncoder:
    """An export of ``maw export`` (plain or MAW) rebuilt as maw's own Encoder, no sentence-transformers."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from maw.config import ConfigError, MAWConfig
    from maw.models.encoder import Encoder
    from maw.models.maw_encoder import inject_maw as _inject

    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    st = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    pooling = next((m for m in modules if m["type"].endswith(".Pooling")), None)
    if pooling is not None:
        cfg = json.loads((folder / pooling["path"] / "config.json").read_text(encoding="utf-8"))
        modes = (
            {cfg["pooling_mode"]}
            if "pooling_mode" in cfg
            else {  # sentence-transformers 6 / older
                k.removeprefix("pooling_mode_").removesuffix("_tokens")
                for k, v in cfg.items()
                if k.startswith("pooling_mode_") and v
            }
        )
        if modes != {"mean"}:
            raise ConfigError(f"{folder}: pooling {sorted(modes)}; only mean-pooled models load here (maw's)")
    normalize = any(m["type"].endswith(".Normalize") for m in modules)
    doc = int(st.get("document_length") or st["max_seq_length"])
    query = int(st.get("query_length") or doc)
    spec_file = folder / "maw_config.json"
    if spec_file.is_file():  # a MAW export: the backbone, MAW in its layers, then every weight strictly
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        backbone = AutoModel.from_config(AutoConfig.from_pretrained(folder), add_pooling_layer=False)
        encoder = Encoder(backbone, AutoTokenizer.from_pretrained(folder), str(folder), normalize=normalize)
        for entry in spec["layers"]:
            _inject(encoder, MAWConfig(**entry["config"]), layers=(int(entry["layer"]),))
        backbone.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    else:
        encoder = Encoder.from_pretrained(str(folder), normalize=normalize)
    encoder.eval()
    if device is not None:
        encoder.to(device)
    return TextEncoder(encoder, query, doc, str(folder))


def load_encoder(path: str | Path, device: str | None = None) -> TextEncoder:
    """Load a retriever encoder for :meth:`TextEncoder.encode`.

    ``path``: a ``maw train`` run folder (its best checkpoint), ``RUN/best`` or ``RUN/latest``; a
    folder written by ``maw export``; or any Hugging Face encoder id or folder (as is, zero-shot,
    max length from its sentence-transformers settings). ``device``: e.g. "cuda" (default: CPU).
    """
    from maw.config import ConfigError

    checkpoint = trained_checkpoint(path)
    if checkpoint is not None:
        from maw.training.methods import load_trained_encoder

        encoder, plan, _ = load_trained_encoder(checkpoint, device=device)
        return TextEncoder(
            encoder, plan.model.query_max_length, plan.model.doc_max_length, str(checkpoint), plan
        )
    if is_export(path):
        return _load_export(Path(path), device)
    from maw.models.encoder import Encoder
    from maw.plan import model_max_length

    try:
        encoder = Encoder.from_pretrained(str(path))
    except OSError as exc:
        raise ConfigError(
            f"{path}: not a maw run or checkpoint, not an export, and no Hugging Face model ({exc})"
        ) from None
    encoder.eval()
    if device is not None:
        encoder.to(device)
    length = model_max_length(str(path))
    return TextEncoder(encoder, length, length, str(path))


# ---------------------------------------------------------------------------------------------- MAW
def inject_maw(model: Any, **options: Any) -> Any:
    """Put MAW attention into a Hugging Face encoder (or a maw ``Encoder``), in place; returns ``model``.

    ``options`` are the MAW options of ``maw train`` (:class:`maw.config.MAWConfig`), e.g.
    ``depth_dim=4, router="soft", granularity="query", maw_layers="5,6"`` (1-indexed layers; default
    the last). The blocks start from the pretrained query/key/value weights; with the default
    routers (soft, convex; hard routers gated) the model computes what it computed before.
    ``model``: e.g. ``transformers.AutoModel.from_pretrained(...)`` (BERT-like, MPNet, DistilBERT),
    or a task model around one (its ``base_model`` gets the blocks).
    """
    from maw.config import ConfigError, MAWConfig
    from maw.models.encoder import Encoder
    from maw.models.maw_encoder import inject_maw as _inject
    from maw.plan import resolve_maw

    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(MAWConfig)})
    if unknown:
        raise ConfigError(
            f"inject_maw: unknown option(s) {unknown}; the MAW options are maw.config.MAWConfig's"
        )
    cfg = MAWConfig(**options)  # ConfigError names a bad value
    if isinstance(model, Encoder):
        encoder = model
    else:  # the Encoder only locates the layers; base is changed in place
        base = getattr(model, "base_model", model)
        name = str(getattr(getattr(base, "config", None), "_name_or_path", "") or type(base).__name__)
        encoder = Encoder(base, None, name)
    # this door's one parse and check of what needs the model (a command's is maw.plan.resolve)
    _inject(encoder, cfg, resolve_maw(cfg, encoder.num_layers, encoder.head_size, encoder.model_name))
    return model


# ---------------------------------------------------------------------------------------------- evaluate
def option_overrides(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"top_k": 100, "device": "cpu"}`` -> ``{"eval": {"top_k": 100}, "runtime": {"device": "cpu"}}``:
    option names (the CLI's, with underscores) put into their config sections; unknown ones refused."""
    from maw.config import SECTIONS, ConfigError

    where = {f.name: s for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(where))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; options are the fields of maw.config's sections")
    out: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        out.setdefault(where[name], {})[name] = value
    return out


def evaluation_plan(cfg: Any, model: str | None, method: str | None):
    """What ``maw evaluate`` runs for ``--model`` and ``--method``: ``(plan, encoder or None,
    checkpoint folder or None)``. A trained checkpoint (``RUN``, ``RUN/best``) brings its training
    plan and its weights; an export folder its weights (evaluated as zeroshot with them); otherwise
    bm25, or zeroshot with the Hugging Face model."""
    from maw.config import ConfigError
    from maw.plan import resolve

    checkpoint = trained_checkpoint(model)
    if checkpoint is not None:
        if method not in (None, "zeroshot"):
            raise ConfigError(f"--method {method}: --model {model} is a trained checkpoint; drop --method")
        from maw.training.methods import load_trained_encoder

        encoder, trained, _ = load_trained_encoder(checkpoint)
        resolved = dataclasses.replace(
            trained.model,
            query_max_length=cfg.model.query_max_length or trained.model.query_max_length,
            doc_max_length=cfg.model.doc_max_length or trained.model.doc_max_length,
        )
        plan = dataclasses.replace(trained, data=cfg.data, model=resolved, eval=cfg.eval, runtime=cfg.runtime)
        return plan, encoder, checkpoint
    method = method or ("zeroshot" if model else "bm25")
    if method not in ("bm25", "zeroshot"):
        raise ConfigError(
            f"--method: {method!r}: evaluate takes bm25 or zeroshot; for a trained model pass "
            "--model RUN/best (a `maw train` checkpoint)"
        )
    if method == "bm25" and model:
        raise ConfigError("--model: only used by --method zeroshot or a trained checkpoint")
    encoder = None
    model_cfg = cfg.model
    if is_export(model):  # its own weights (MAW too) and max lengths, unless given
        loaded = _load_export(Path(model))
        encoder = loaded.encoder
        model_cfg = dataclasses.replace(
            cfg.model,
            query_max_length=cfg.model.query_max_length or loaded.query_max_length,
            doc_max_length=cfg.model.doc_max_length or loaded.doc_max_length,
            normalize=loaded.encoder.normalize,
        )
    plan = resolve(method, cfg.data, model_cfg, None, None, cfg.eval, cfg.runtime)
    return plan, encoder, None


def evaluate(
    model: str | Path | TextEncoder | None = None,
    *,
    dataset: str = "demo",
    split: str = "test",
    method: str | None = None,
    out: str | Path | None = None,
    save_run: str | Path | None = None,
    cache: bool = False,
    progress: bool = False,
    **options: Any,
) -> dict[str, float | None]:
    """Retrieve ``split``'s queries of ``dataset`` from its full corpus and return the metrics
    (``{"nDCG@10": ..., "R@100": ..., "RR@10": ..., "AP": ..., ...}``), as ``maw evaluate`` does.

    ``model``: a ``maw train`` run or checkpoint, an export folder, a Hugging Face id or folder, or
    a :class:`TextEncoder` from :func:`load_encoder`; None with ``method="bm25"`` (the default
    without a model). ``out``: also write ``maw evaluate``'s result JSON (metrics per query,
    versions, dataset fingerprint) there; ``save_run``: the TREC run file. ``cache``: keep document
    embeddings in the embedding cache (``embedding_cache_dir``). ``options``: any other option of
    ``maw evaluate`` by name (``top_k=100``, ``test_samples=50``, ``device="cuda"``, ``index="hnsw"``).
    """
    from maw.config import resolve_config
    from maw.evaluation.evaluate import run_evaluation
    from maw.plan import resolve

    overrides = option_overrides(options)
    overrides.setdefault("data", {})["dataset"] = str(dataset)
    overrides.setdefault("eval", {})["split"] = split
    overrides.setdefault("runtime", {}).setdefault("progress", progress)
    loaded = model if isinstance(model, TextEncoder) else None
    if loaded is None and model is not None:
        overrides.setdefault("model", {})["model"] = str(model)
    elif loaded is not None and loaded.plan is None:  # an export or a Hugging Face model, in memory
        overrides.setdefault("model", {})["model"] = loaded.source
    cfg = resolve_config(overrides)
    if loaded is None:
        plan, encoder, checkpoint = evaluation_plan(cfg, None if model is None else str(model), method)
    else:  # these weights, with the plan of their checkpoint (or as zero-shot) and their max lengths
        if method not in (None, "zeroshot"):
            raise ValueError(f"method={method!r}: a loaded encoder is evaluated as itself; drop method")
        lengths = {
            "query_max_length": cfg.model.query_max_length or loaded.query_max_length,
            "doc_max_length": cfg.model.doc_max_length or loaded.doc_max_length,
        }
        if loaded.plan is not None:
            base = loaded.plan
            plan = dataclasses.replace(
                base,
                data=cfg.data,
                model=dataclasses.replace(base.model, **lengths),
                eval=cfg.eval,
                runtime=cfg.runtime,
            )
        else:
            model_cfg = dataclasses.replace(cfg.model, normalize=loaded.encoder.normalize, **lengths)
            plan = resolve("zeroshot", cfg.data, model_cfg, None, None, cfg.eval, cfg.runtime)
        encoder, checkpoint = loaded.encoder, (loaded.source if loaded.plan is not None else None)
    with tempfile.TemporaryDirectory(prefix="maw-evaluate-") as scratch:
        record = run_evaluation(
            plan,
            encoder=encoder,
            checkpoint=str(checkpoint) if checkpoint else None,
            out=str(out) if out is not None else str(Path(scratch) / "result.json"),
            use_cache=cache and checkpoint is None,
            save_run=str(save_run) if save_run is not None else None,
        )
    return dict(record["metrics"]) if record is not None else {}
