"""TensorBoard for a job (conf/logger/tensorboard.yaml): Lightning's TensorBoardLogger writing
event files into the job folder, every logged value a scalar under its own step, and the job's
whole composed config as the run's hparams (TensorBoard's HParams tab), shown beside `val/err`.

    reslab-train logger=tensorboard && tensorboard --logdir outputs
    tensorboard --logdir multirun/2026-11-27/10-00-00_digits_search   # every job of a sweep
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

HParam = int | float | bool | str


class TensorBoardJobLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger whose hparams are declared with `hparams_metrics`: the
    HParams tab pairs a run's hparams with those metrics, read from the run's own scalars, so no
    value is written for them (Lightning's `default_hp_metric` writes a placeholder of -1)."""

    def __init__(self, *args: Any, hparams_metrics: Sequence[str] = ("val/err",), **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)
        self.hparams_metrics = tuple(hparams_metrics)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        # Lightning's: hparams.yaml, and the HParams summary when metrics come with the call.
        super().log_hyperparams(params, metrics, step)
        if metrics is not None or not self.hparams_metrics or not isinstance(params, Mapping):
            return
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, session_end = hparams(flat_hparams(params), dict.fromkeys(self.hparams_metrics, 0.0))
        for summary in (experiment, session_start, session_end):
            self.experiment.file_writer.add_summary(summary, step)


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, HParam]:
    """`{"optimizer": {"lr": 0.1}}` -> `{"optimizer/lr": 0.1}`. TensorBoard's hparams are
    numbers, text or booleans: lists and null become their YAML-like text."""
    flat: dict[str, HParam] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, prefix=f"{name}/"))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
