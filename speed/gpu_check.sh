#!/usr/bin/env bash
# One check of the CUDA path, for a machine with an NVIDIA GPU (run it whenever one is available and
# paste its output into README.md, section "GPU", subsection "GPU check"; the same section says how
# to get FAISS on the GPU). From the repository root, in the project's virtual environment with the
# dev extra (pip install -e ".[dev]"):
#
#     bash speed/gpu_check.sh 2>&1 | tee gpu_check.log
#
# 0. the environment: torch and its CUDA devices, the FAISS build and faiss.get_num_gpus() (0 with the
#    faiss-cpu dependency: search then runs on the CPU; see README "GPU" for faiss-gpu-cu12 / conda);
# 1. the test suite with CUDA visible (tests/test_cuda.py runs the CUDA-only checks; the rest picks
#    CUDA where the code defaults to it);
# 2. Encoder.encode vs SentenceTransformer.encode in float16, same batch, docs/s;
# 3. the MAW block (pair, soft, fwd+bwd) vs SDPA: time and peak CUDA memory;
# 4. a 2-GPU torchrun encode (`maw evaluate` zero-shot) when two GPUs exist, compared with one process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${MAW_CHECK_DATA:-../shared/datasets/scifact}
echo "== 0. environment"
$PY - <<'PY'
from importlib import metadata

import faiss
import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    print(" ", i, torch.cuda.get_device_name(i))
builds = sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("faiss"))
gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
print("faiss", faiss.__version__, "distribution(s)", ", ".join(builds) or "?", "faiss.get_num_gpus()", gpus)
if gpus == 0:
    print("WARNING: FAISS sees no GPU (faiss-cpu, or a CUDA build without a visible GPU): every index searches on "
          "the CPU. README.md, section GPU: replace faiss-cpu by faiss-gpu-cu12 (pip) or faiss-gpu (conda-forge).")
if len(builds) > 1:
    print("WARNING: several FAISS distributions share the module 'faiss':", ", ".join(builds), "- keep one")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

echo "== 1. tests (CUDA visible)"
timeout 1500 $PY -m pytest -q -x tests/test_cuda.py 2>&1 | tail -5
timeout 1500 $PY -m pytest -q 2>&1 | tail -3

echo "== 2. encode throughput, fp16, batch 256"
if [ -f "$DATA/corpus.jsonl" ]; then
  timeout 600 $PY speed/encode_throughput.py --dataset "$DATA" --num-docs 5000 --batch-size 256 --device cuda --fp16 --repeats 3
else
  echo "skipped: no $DATA/corpus.jsonl"
fi

echo "== 3. MAW block vs SDPA (pair, soft, fwd+bwd), peak CUDA memory"
timeout 900 $PY speed/maw_attention.py --device cuda --lengths 128,256,512 --depths 8,32 --repeats 5

echo "== 4. torchrun encode on 2 GPUs"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ] && [ -f "$DATA/corpus.jsonl" ]; then
  OUT=$(mktemp -d)
  timeout 900 $PY -m maw.cli evaluate --dataset "$DATA" --method zeroshot --shard-size 1000 --out "$OUT/one.json" --no-cache --quiet
  timeout 900 torchrun --standalone --nproc-per-node 2 -m maw.cli evaluate --dataset "$DATA" --method zeroshot \
      --shard-size 1000 --out "$OUT/two.json" --no-cache --quiet
  $PY - "$OUT" <<'PY'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{n}.json")) for n in ("one", "two"))
print("nDCG@10 one process", round(a["metrics"]["nDCG@10"], 4), "two processes", round(b["metrics"]["nDCG@10"], 4))
print("encode docs/s one", a["efficiency"].get("docs_per_second"), "two", b["efficiency"].get("docs_per_second"))
PY
else
  echo "skipped: $NGPU GPU(s)"
fi
