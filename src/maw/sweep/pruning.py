"""Stopping hopeless sweep configurations early: Optuna's successive-halving pruner (ASHA).

Every arm is one Optuna study; each of its configurations (sweep cells) is one trial. After every
epoch the trainer reports the epoch's validation nDCG@10 (``trial.report(score, epoch)``) and asks
the pruner (``trial.should_prune()``); a pruned cell stops there, keeps its best epoch so far as
its score, and says so (``pruned``, ``pruned_at_epoch``) in its record and the leaderboard.

The rule is ``optuna.pruners.SuccessiveHalvingPruner`` (asynchronous successive halving):
rungs at epochs ``min_epochs * reduction_factor ** r`` (1, 3, 9 with the defaults); a trial
reaching a rung continues only if its score is in the top ``1 / reduction_factor`` of the scores
reported at that rung so far (the first trials continue only if they are the best so far). Every
arm gets the same number of configurations and the same pruner settings, so the budget stays
equal. The scores are validation scores: the test split is never read by a sweep.

The studies live in an Optuna journal file, ``<out>/optuna.journal`` (``JournalStorage`` with a
file lock): shared by processes and nodes that see the same ``out`` folder, small, free of
machine paths, and committed with the cells. A cell interrupted mid-training finds its trial
again (by the cell name in the trial's user attributes) and resumes reporting; a failed cell gets
a fresh trial when it runs again.

Grid settings (``[sweep]`` table)::

    pruner = "successive-halving"   # or "none": every configuration trains to its early stop
    prune_min_epochs = 1            # the first rung
    prune_reduction_factor = 3      # keep the top third at each rung
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maw.config import ConfigError

PRUNERS = ("successive-halving", "none")
JOURNAL = "optuna.journal"


@dataclass(frozen=True)
class PrunerSpec:
    """The pruning rule of a sweep (the same for every arm)."""

    kind: str = "successive-halving"
    min_epochs: int = 1
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        if self.kind not in PRUNERS:
            raise ConfigError(f"[sweep] pruner: unknown {self.kind!r}; choose one of {', '.join(PRUNERS)}")
        if not isinstance(self.min_epochs, int) or self.min_epochs < 1:
            raise ConfigError(f"[sweep] prune_min_epochs: must be an integer >= 1, got {self.min_epochs!r}")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 2:
            raise ConfigError(
                f"[sweep] prune_reduction_factor: must be an integer >= 2, got {self.reduction_factor!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def rungs(self, max_epochs: int) -> list[int]:
        """The epochs below ``max_epochs`` at which a configuration can be pruned (none when disabled)."""
        if not self.enabled:
            return []
        out, r = [], 0
        while (e := self.min_epochs * self.reduction_factor**r) < max_epochs:
            out.append(e)
            r += 1
        return out

    def describe(self, max_epochs: int) -> str:
        if not self.enabled:
            return "no pruning: every configuration trains to its early stop"
        rule = (
            f"successive halving (Optuna SuccessiveHalvingPruner, reduction factor {self.reduction_factor}): "
            f"at a rung a configuration continues only if its validation nDCG@10 is in the top "
            f"1/{self.reduction_factor} of the scores its arm reported at that epoch so far"
        )
        rungs = self.rungs(max_epochs)
        if not rungs:
            return f"{rule}; no rung comes before the last epoch ({max_epochs}), so nothing can be pruned"
        return f"{rule}; rungs after epochs {', '.join(map(str, rungs))} (of at most {max_epochs})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "min_epochs": self.min_epochs, "reduction_factor": self.reduction_factor}


class SweepTrials:
    """The Optuna studies of a sweep folder (one per arm), in ``<out>/optuna.journal``."""

    def __init__(self, out: Path, dataset_key: str, spec: PrunerSpec):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        path = Path(out) / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        self.dataset_key, self.spec = dataset_key, spec
        self._studies: dict[str, Any] = {}

    def study(self, arm: str):
        import optuna

        if arm not in self._studies:
            pruner = (
                optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=self.spec.min_epochs,
                    reduction_factor=self.spec.reduction_factor,
                    min_early_stopping_rate=0,
                )
                if self.spec.enabled
                else optuna.pruners.NopPruner()
            )
            self._studies[arm] = optuna.create_study(
                study_name=f"{self.dataset_key}/{arm}",
                storage=self.storage,
                direction="maximize",
                pruner=pruner,
                load_if_exists=True,
            )
        return self._studies[arm]

    def trial(self, arm: str, cell: str, options: dict[str, Any]):
        """The running trial of ``cell`` (an interrupted run), else a new one."""
        import optuna
        from optuna.trial import TrialState

        study = self.study(arm)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("cell") == cell:
                return optuna.trial.Trial(study, t._trial_id)
        trial = study.ask()
        trial.set_user_attr("cell", cell)
        trial.set_user_attr("options", {k: str(v) for k, v in options.items()})
        return trial

    @staticmethod
    def reporter(trial, metric: str) -> Callable[[int, dict[str, float]], bool]:
        """The trainer's ``on_epoch_end``: report the epoch's validation score, ask the pruner."""

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> bool:
            score = metrics.get(metric)
            if score is None:
                return False
            trial.report(float(score), epoch)
            return bool(trial.should_prune())

        return on_epoch_end

    def finish(self, arm: str, trial, record: dict[str, Any]) -> None:
        """Close the trial with the cell's outcome (score, pruned, or failed)."""
        from optuna.trial import TrialState

        study = self.study(arm)
        if record.get("status") != "ok":
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        elif record.get("pruned"):
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(trial, record.get("score"), skip_if_finished=True)
