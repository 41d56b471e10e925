"""Optional experiment tracking of benchmark cells: TensorBoard or MLflow, local files only.

``--tracker tensorboard`` writes event files under ``<run>/tensorboard/<dataset>/<method>-seed<seed>``;
``--tracker mlflow`` logs to a file store ``<run>/mlruns`` (experiment = the run folder's name, one
MLflow run per cell). Neither package is a dependency of maw (``pip install maw[tracking]``): they
are imported when the tracker is created, and a missing package is a ConfigError naming the flag,
raised before any cell runs.

Logged per cell: the per-epoch history (validation nDCG@10, training loss, every numeric field)
as a series over epochs, the final test metrics and runtimes, and (MLflow) the cell's flattened
config as parameters.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from maw.config import ConfigError

TRACKERS = ("none", "tensorboard", "mlflow")


def _numeric(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of a nested dict: {"a": {"b": 1}} -> {"a/b": 1.0}."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_numeric(v, key + "/"))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


def _flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out


class Tracker:
    """No-op tracker (``--tracker none``); subclasses log one cell at a time."""

    def log_cell(self, cell: dict[str, Any]) -> None:
        """Log a finished cell (status ok)."""

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tracker tensorboard: the 'tensorboard' package is not installed; "
                "pip install tensorboard (or maw[tracking]), or use --tracker none"
            ) from None
        self._writer_cls = SummaryWriter
        self.root = Path(run_dir) / "tensorboard"

    def log_cell(self, cell: dict[str, Any]) -> None:
        writer = self._writer_cls(
            log_dir=str(self.root / cell["dataset"] / f"{cell['method']}-seed{cell['seed']}")
        )
        try:
            for i, h in enumerate(cell.get("history") or []):
                step = int(h.get("epoch", i)) if isinstance(h, dict) else i
                for name, value in _numeric(h if isinstance(h, dict) else {}).items():
                    writer.add_scalar(f"history/{name}", value, step)
            for name, value in _numeric({"test": cell["metrics"], "runtime": cell["runtimes"]}).items():
                writer.add_scalar(name, value, 0)
        finally:
            writer.close()


class MLflowTracker(Tracker):
    def __init__(self, run_dir: Path):
        try:
            import mlflow
        except ImportError:
            raise ConfigError(
                "--tracker mlflow: the 'mlflow' package is not installed; "
                "pip install mlflow (or maw[tracking]), or use --tracker none"
            ) from None
        self.mlflow = mlflow
        self.uri = (Path(run_dir) / "mlruns").resolve().as_uri()
        self.experiment = Path(run_dir).name

    @staticmethod
    def _key(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name.replace("@", "_at_"))

    def log_cell(self, cell: dict[str, Any]) -> None:
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(self.experiment)
        with mlflow.start_run(run_name=f"{cell['dataset']}/{cell['method']}-seed{cell['seed']}"):
            mlflow.log_params({self._key(k): v for k, v in _flat_params(cell.get("config") or {}).items()})
            for i, h in enumerate(cell.get("history") or []):
                if isinstance(h, dict):
                    step = int(h.get("epoch", i))
                    mlflow.log_metrics(
                        {self._key(f"history/{k}"): v for k, v in _numeric(h).items()}, step=step
                    )
            mlflow.log_metrics(
                {
                    self._key(k): v
                    for k, v in _numeric({"test": cell["metrics"], "runtime": cell["runtimes"]}).items()
                }
            )


def make_tracker(kind: str, run_dir: str | Path) -> Tracker:
    """The tracker named by ``--tracker`` (ConfigError for an unknown name or a missing package)."""
    if kind in (None, "none"):
        return Tracker()
    if kind == "tensorboard":
        return TensorBoardTracker(Path(run_dir))
    if kind == "mlflow":
        return MLflowTracker(Path(run_dir))
    raise ConfigError(f"--tracker: unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")
