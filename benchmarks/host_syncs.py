"""Host reads of tensors per training step in a real `reslab-train` run.

    python benchmarks/host_syncs.py                                   # CPU, digits, ResNet-8, 120 steps
    python benchmarks/host_syncs.py --json out.json trainer=gpu data=synthetic model.depth=20

Every call of Tensor.item / tolist / __float__ / __int__ / __bool__ / cpu / numpy is counted
(on a GPU each one makes the host wait for the device), and attributed to the training step
during which it happened: from one `training_step` to the next (the last step ends with the
end of training; Lightning's teardown comes after). Reads made by PyTorch's DataLoader (its
sampler draws a seed from the CPU generator once per epoch: a CPU tensor, never a wait for the
device) are counted apart, as `dataloader_reads`. On CUDA the run also has
`torch.cuda.set_sync_debug_mode("warn")` on, and PyTorch's own count of synchronising
operations is attributed the same way. ResLab flushes its per-step values every
`trainer.log_every_n_steps` steps (reslab.callbacks.step_log): those steps read the values once;
every other step should read nothing. Counting wraps those Tensor methods in this process,
which is what a benchmark may do and the library never does.

The run: the overrides given (Hydra syntax) on top of these defaults, with validation and
testing off so that only the training loop is counted:
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

DEFAULTS = [
    "model.depth=8",
    "data=digits",
    "trainer.max_steps=120",
    "trainer.log_every_n_steps=50",
    "logger=csv",
    "test=false",
    "++trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
]
__doc__ += "\n    " + " ".join(DEFAULTS) + "\n"

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


class StepCounter:
    """Counts per training step: host reads by kind, and CUDA's synchronising-operation warnings."""

    def __init__(self) -> None:
        self.step: int | str | None = None  # None before training, "after" once it has ended
        self.reads: dict[int | str | None, collections.Counter] = collections.defaultdict(collections.Counter)
        self.cuda_syncs: dict[int | str | None, int] = collections.defaultdict(int)
        self.warnings: list[warnings.WarningMessage] = []
        self._seen_warnings = 0

    def count_read(self, kind: str) -> None:
        caller = sys._getframe(2).f_code.co_filename.replace("\\", "/")
        if "torch/utils/data/" in caller:
            kind = "dataloader"
        self.reads[self.step][kind] += 1

    def enter_step(self, step: int | str) -> None:
        self._take_warnings()
        self.step = step

    def _take_warnings(self) -> None:
        new = self.warnings[self._seen_warnings :]
        self._seen_warnings = len(self.warnings)
        self.cuda_syncs[self.step] += sum("synchroniz" in str(w.message) for w in new)

    def enter_validation(self) -> None:
        self._take_warnings()
        self._step_before_validation, self.step = self.step, "validation"

    def leave_validation(self) -> None:
        self._take_warnings()
        self.step = self._step_before_validation

    def finish(self) -> None:
        self._take_warnings()


def install(counter: StepCounter) -> None:
    """Wrap the Tensor read methods and ClassificationModule.training_step (this process only)."""
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            counter.count_read(_name)
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, functools.wraps(original)(counting))

    from reslab.module import ClassificationModule

    original_step = ClassificationModule.training_step

    @functools.wraps(original_step)
    def training_step(self, batch, batch_idx):
        counter.enter_step(self.global_step)
        return original_step(self, batch, batch_idx)

    ClassificationModule.training_step = training_step
    # Reads during validation (a recipe that validates as it trains) are counted apart.
    ClassificationModule.on_validation_start = lambda self: counter.enter_validation()
    ClassificationModule.on_validation_end = lambda self: counter.leave_validation()
    # The module's hook runs after every callback's, so the last flush still counts as a step's.
    ClassificationModule.on_train_end = lambda self: counter.enter_step("after")


def run_reslab(overrides: list[str], counter: StepCounter) -> dict:
    """Run reslab-train in this process; return its results.json."""
    from reslab.train import main

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "job"
        sys.argv = ["reslab-train", *DEFAULTS, *overrides, f"hydra.run.dir={run_dir}"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            counter.warnings = caught
            sync_debug = torch.cuda.is_available()
            if sync_debug:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                main()
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    raise
            finally:
                if sync_debug:
                    torch.cuda.set_sync_debug_mode("default")
                counter.finish()
        return json.loads((run_dir / "results.json").read_text())


def summarise(counter: StepCounter, results: dict, log_every: int) -> dict:
    steps = results.get("steps") or 0
    # A step flushes when the step count after it is a multiple of the interval, and the last one.
    flush = {s for s in range(steps) if (s + 1) % log_every == 0} | ({steps - 1} if steps else set())
    per_step = [
        {
            "step": s,
            "flush": s in flush,
            "reads": sum(n for kind, n in counter.reads[s].items() if kind != "dataloader"),
            "dataloader_reads": counter.reads[s]["dataloader"],
            "cuda_syncs": counter.cuda_syncs.get(s, 0),
        }
        for s in range(steps)
    ]
    others = [row for row in per_step if not row["flush"]]
    flushes = [row for row in per_step if row["flush"]]

    def mean(rows, key):
        return round(sum(r[key] for r in rows) / len(rows), 3) if rows else None

    kinds = collections.Counter()
    for s in range(steps):
        kinds.update(counter.reads[s])
    return {
        "status": results.get("status"),
        "steps": steps,
        "log_every_n_steps": log_every,
        "cuda": torch.cuda.is_available(),
        "reads_per_step_outside_flushes": mean(others, "reads"),
        "reads_per_flush_step": mean(flushes, "reads"),
        "cuda_syncs_per_step_outside_flushes": mean(others, "cuda_syncs") if torch.cuda.is_available() else None,
        "cuda_syncs_per_flush_step": mean(flushes, "cuda_syncs") if torch.cuda.is_available() else None,
        "reads_by_kind": dict(kinds),
        "dataloader_reads_per_step": mean(per_step, "dataloader_reads"),
        "reads_in_validation": sum(counter.reads["validation"].values()),
        "cuda_syncs_in_validation": counter.cuda_syncs.get("validation", 0) if torch.cuda.is_available() else None,
        "reads_before_training": sum(counter.reads[None].values()),
        "reads_after_training": sum(counter.reads["after"].values()),
        "per_step": per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the counts here")
    args, overrides = parser.parse_known_args()
    if args.json:  # what a run cut short leaves: what it was
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"status": "running", "overrides": overrides}) + "\n")
    counter = StepCounter()
    install(counter)
    results = run_reslab(overrides, counter)
    log_every = int(
        next(
            (
                o.split("=", 1)[1]
                for o in reversed(DEFAULTS + overrides)
                if o.lstrip("+").startswith("trainer.log_every_n_steps=")
            ),
            50,
        )
    )
    summary = summarise(counter, results, log_every)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({**summary, "overrides": overrides}, indent=2) + "\n")
        tmp.replace(args.json)
    print(f"reslab-train {' '.join(overrides) or '(defaults)'}: {summary['steps']} steps, {summary['status']}")
    print(f"host reads per step outside flushes : {summary['reads_per_step_outside_flushes']}")
    print(f"host reads per flush step           : {summary['reads_per_flush_step']}  (every {log_every} steps)")
    if summary["cuda"]:
        print(f"CUDA syncs per step outside flushes : {summary['cuda_syncs_per_step_outside_flushes']}")
        print(f"CUDA syncs per flush step           : {summary['cuda_syncs_per_flush_step']}")
    print(f"reads by kind                       : {summary['reads_by_kind']}")


if __name__ == "__main__":
    main()
