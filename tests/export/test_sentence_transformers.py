"""Export to sentence-transformers: the folder loads and encodes like maw's own encoder, MAW included,
also where the maw package cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from export_testkit import DOC_MAX, QUERY_MAX
from safetensors.torch import load_file

from maw.data import load_dataset
from maw.export import ExportError, export_sentence_transformers
from maw.export.sentence_transformers import ship_maw_code
from maw.training import load_trained_encoder

TOL = 1e-5


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    ds = load_dataset("demo")
    queries = [ds.queries[q] for q in sorted(ds.qrels["test"])[:12]]
    docs = ds.doc_texts()[:24]  # some longer than DOC_MAX tokens: truncation is exercised
    return queries, docs


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory):
    """variant -> its export folder, made once (a MAW pair export builds the C++ kernel once per path)."""
    made = {}

    def get(variant: str):
        if variant not in made:
            made[variant] = export_sentence_transformers(
                checkpoints(variant) / "best", tmp_path_factory.mktemp(f"export-{variant}") / "model"
            )
        return made[variant]

    return get


def _maw_embeddings(run_dir, queries, docs):
    encoder = load_trained_encoder(run_dir / "best")[0]
    return encoder.encode(queries, QUERY_MAX, batch_size=5), encoder.encode(docs, DOC_MAX, batch_size=5)


@pytest.mark.parametrize("variant", ["maw-query", "maw-pair", "lora", "finetune"])
def test_export_encodes_like_maw(variant, checkpoints, exports, texts):
    from sentence_transformers import SentenceTransformer

    run_dir = checkpoints(variant)
    queries, docs = texts
    out = exports(variant)
    model = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    q_ref, d_ref = _maw_embeddings(run_dir, queries, docs)

    assert model.max_seq_length == DOC_MAX
    np.testing.assert_allclose(model.encode(docs, batch_size=7), d_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode_document(docs, batch_size=7), d_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode_query(queries, batch_size=7), q_ref, atol=TOL, rtol=0)

    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    st_cfg = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {} and st_cfg["maw"]["query_max_length"] == QUERY_MAX
    assert st_cfg["maw"]["doc_max_length"] == DOC_MAX
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k for k in weights)
    if variant.startswith("maw"):
        assert modules[0]["type"] == "modeling_maw.MAWTransformer"
        assert any(".attention.self.router." in k for k in weights)
        spec = json.loads((out / "maw_config.json").read_text())
        assert [e["config"]["granularity"] for e in spec["layers"]] == [variant.split("-")[1]]
    else:  # a plain BERT: sentence-transformers' own module, no shipped code
        assert modules[0]["type"] == "sentence_transformers.base.modules.transformer.Transformer"
        assert not (out / "modeling_maw.py").exists() and not (out / "maw_code").exists()
        assert not any("router" in k for k in weights)


BLOCKED_MAW = textwrap.dedent(
    """
    import sys
    import numpy as np

    class NoMaw:  # the maw package cannot be imported, whatever sys.path holds
        def find_spec(self, name, path=None, target=None):
            if name == "maw" or name.startswith("maw."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoMaw())
    sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/src")]
    try:
        import maw  # noqa: F401
        raise SystemExit("maw is importable")
    except ModuleNotFoundError:
        pass
    from sentence_transformers import SentenceTransformer

    folder, texts_file, out_file = sys.argv[1:4]
    texts = open(texts_file, encoding="utf-8").read().split("\\n")
    model = SentenceTransformer(folder, trust_remote_code=True, device="cpu", local_files_only=True)
    np.save(out_file, model.encode(texts, batch_size=8))
    assert not [m for m in sys.modules if m == "maw" or m.startswith("maw.")], "maw got imported"
    print("modules", sorted({type(m).__name__ for m in model.modules() if "MAW" in type(m).__name__}))
    """
)


@pytest.mark.parametrize("variant", ["maw-query", "maw-pair"])
def test_maw_export_works_without_the_maw_package(variant, checkpoints, exports, texts, tmp_path):
    run_dir = checkpoints(variant)
    _, docs = texts
    out = exports(variant)
    (tmp_path / "texts.txt").write_text("\n".join(docs), encoding="utf-8")
    (tmp_path / "load.py").write_text(BLOCKED_MAW, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "load.py"),
            str(out),
            str(tmp_path / "texts.txt"),
            str(tmp_path / "e.npy"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "MAWSelfAttention" in proc.stdout and "MAWTransformer" in proc.stdout
    _, d_ref = _maw_embeddings(run_dir, [], docs)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), d_ref, atol=TOL, rtol=0)


def test_reloaded_maw_model_saves_and_loads_again(exports, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    _, docs = texts
    out = exports("maw-query")
    first = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    first.save(str(tmp_path / "again"))
    again = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    np.testing.assert_array_equal(again.encode(docs[:6]), first.encode(docs[:6]))


def test_shipped_code_imports_nothing_from_maw(tmp_path):
    files = ship_maw_code(tmp_path / "maw_code")
    assert {"attention/maw.py", "attention/routers.py", "attention/soft_pair_kernel.py", "config.py"} <= set(
        files
    )
    assert any(f.startswith("attention/kernels/") and f.endswith(".cpp") for f in files)
    for path in (tmp_path / "maw_code").rglob("*.py"):
        text = path.read_text()
        assert "from maw" not in text and "import maw" not in text, path


def test_export_refuses_what_it_should_and_replaces_an_old_export(checkpoints, tmp_path):
    with pytest.raises(ExportError, match="not a maw checkpoint"):
        export_sentence_transformers(tmp_path, tmp_path / "out")
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a sentence-transformers export"):
        export_sentence_transformers(checkpoints("finetune") / "best", other)
    assert (other / "notes.txt").read_text() == "keep me"
    out = export_sentence_transformers(checkpoints("finetune"), tmp_path / "out")  # a run folder: its best/
    (out / "stale.txt").write_text("from an older export")
    export_sentence_transformers(checkpoints("finetune") / "best", out)
    assert not (out / "stale.txt").exists() and (out / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "precious"]  # no staging folder left
