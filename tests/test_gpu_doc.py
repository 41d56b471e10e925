"""speed/gpu_check.sh and the README agree: the section the script points to exists and says how to
get FAISS on the GPU; the script reports faiss.get_num_gpus()."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_points_to_a_readme_section_that_exists():
    script = (ROOT / "speed" / "gpu_check.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", readme, flags=re.M))
    assert 'README.md, section "GPU", subsection "GPU check"' in script
    assert {"GPU", "GPU check"} <= headings
    assert "faiss.get_num_gpus()" in script and "faiss-gpu-cu12" in script
    gpu = readme.split("\n## GPU\n", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "faiss-gpu-cu12",
        "conda-forge faiss-gpu",
        "pip uninstall -y faiss-cpu",
        "faiss.get_num_gpus()",
    ):
        assert needed in gpu, needed
    assert "(#gpu)" in readme  # the scale section links to it
