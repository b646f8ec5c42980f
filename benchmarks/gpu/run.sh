#!/usr/bin/env bash
# The GPU check: one run on a lent GPU machine measures what ResLab's goals need, within 9 minutes.
#
#   bash benchmarks/gpu/run.sh              # on the GPU machine; results under $OUT (see below)
#   bash benchmarks/gpu/run.sh --rehearse   # here, on the CPU: the same run in its CPU form
#
# The machine's python3 is used as it is (it holds torch and most of what ResLab needs); what it
# lacks (benchmarks/gpu/carry.txt) is installed from the wheels carried in .whl/ (made by
# benchmarks/gpu/wheels.sh) into a folder on PYTHONPATH, and ResLab itself without dependencies.
# Before any step, `import reslab.train` and a one-step `reslab-train` must work.
#
# Everything comes back under $OUT, at most 8 files, rewritten as the run goes (a run stopped
# anywhere leaves what finished): summary.json (every step's outcome and figures), run.log, and
# details.tar.gz (each step's log and JSON). A step that fails or runs out of time is recorded
# and the next one runs. The rehearsal makes an environment like the GPU machine's (a venv with
# torch and torchvision and the machine's other packages that ResLab uses, cached outside the
# repository), installs the carried wheels the same way, runs every step on the CPU at small
# sizes under the same limits, and checks what came out.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
HERE=benchmarks/gpu
REHEARSE=0
case ${1:-} in
    --rehearse) REHEARSE=1 ;;
    "") ;;
    *) echo "usage: bash $HERE/run.sh [--rehearse]" >&2; exit 2 ;;
esac

# ----------------------------------------------------------------------------- the steps
# Most needed first. Limits in seconds, the setup included: they add up to 9 minutes (540 s).
# A step is a function `step_NAME` below and a line here; its command writes its JSON to
# $RESULTS/NAME.json as it goes (the summary embeds it) and gets $DEVICE (cuda or cpu).
STEPS=(
    "syncs 40"         # host reads / CUDA syncs per step, Table 6 recipe (augmentation, validation, warm-up)
    "loop 65"          # ResNet-56 CIFAR-shape: ResLab against a plain loop, interleaved repeats, median
    "imagenet 65"      # ImageNet folders: decode + augment images/s, ResNet-34 on real JPEGs vs synthetic
    "resnet50 40"      # ImageNet-shape ResNet-50, bf16, channels_last: images/s
    "jobs_per_gpu 85"  # 1, 2, 4 Table 6 jobs on one GPU: peak memory vs share, throughput while overlapping
    "compile 60"       # speed.compile through reslab-train, checkpoint saved and resumed
    "tests 95"         # the gpu-marked tests
    "ddp 25"           # a 1-GPU DDP run (NCCL)
)
SETUP_LIMIT=65
TOTAL_LIMIT=540
GRACE=10  # a step past its limit gets SIGTERM this long before SIGKILL (its jobs save and leave)

bench() { "$PY" "$HERE/gpu_bench.py" "$@" --device "$DEVICE" --budget-s "$BUDGET" --json "$RESULTS/$STEP.json"; }
step_syncs() {
    local size=(model.depth=110 trainer.max_steps=360)  # one epoch (352 steps) and its validation
    ((REHEARSE)) && size=(model.depth=8 data.val_size=100 data.batch_size=32 trainer.max_steps=30
                          callbacks.warmup_until_error.only_depths=null)
    "$PY" benchmarks/host_syncs.py --json "$RESULTS/$STEP.json" experiment=cifar_table6 data=cifar10 \
        data.root="$DATA" data.verify_checksums=false "${size[@]}" ++trainer.limit_val_batches=1.0 "${ON_DEVICE[@]}"
}
step_loop() { bench loop; }
step_resnet50() { bench resnet50; }
step_imagenet() {
    local size=()
    ((REHEARSE)) && size=(--tiny)
    "$PY" benchmarks/gpu/imagenet_bench.py --device "$DEVICE" "${size[@]}" --run-timeout-s "$BUDGET" \
        --json "$RESULTS/$STEP.json"
}
step_jobs_per_gpu() { bench jobs-per-gpu --data-root "$DATA"; }
step_compile() { bench compile; }
step_tests() {  # only the files holding gpu-marked tests: collecting the others costs a minute on a busy CPU
    "$PY" -m pytest -m gpu -q -p no:cacheprovider --timeout "$BUDGET" --junitxml="$RESULTS/$STEP.xml" \
        $(grep -l "pytest.mark.gpu" tests/test_*.py)
}
step_ddp() { bench ddp; }

# ----------------------------------------------------------------------------- where things go
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONWARNINGS=ignore HYDRA_FULL_ERROR=1
OUT=${OUT:-$(mktemp -d -t reslab-gpu-out-XXXX)}
WORK=$(mktemp -d -t reslab-gpu-work-XXXX)
RESULTS=$WORK/results LOGS=$WORK/logs DATA=$WORK/data/cifar
mkdir -p "$OUT" "$RESULTS" "$LOGS"
rm -f "$OUT"/summary.json "$OUT"/run.log "$OUT"/details.tar.gz
exec > >(tee -a "$OUT/run.log") 2>&1
printf '%s\t%s\n' setup "$SETUP_LIMIT" >"$WORK/plan.tsv"
for line in "${STEPS[@]}"; do printf '%s\t%s\n' $line >>"$WORK/plan.tsv"; done
echo "GPU check$( ((REHEARSE)) && echo ' (rehearsal on the CPU)'), $(date -u '+%F %T UTC'): results in $OUT"

# ----------------------------------------------------------------------------- Python
# The rehearsal's stand-in for the GPU machine's python3: a venv with torch, torchvision and
# the machine's other packages that ResLab uses (its image holds them; see the device tool's
# list), none of what carry.txt names. Made once and kept outside the repository.
MACHINE_PACKAGES="torch==2.14.1 torchvision==0.29.1 lightning torchmetrics scikit-learn matplotlib rich tensorboard
    cloudpickle pytest pytest-timeout pyyaml packaging typing-extensions requests click protobuf psutil xxhash setuptools wheel"
rehearsal_python() {
    local version key cache
    version=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    key=$(echo "$version $MACHINE_PACKAGES" | sha1sum | cut -c1-10)
    cache=${RESLAB_REHEARSAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reslab-gpu-rehearsal}/$key
    if [[ ! -e $cache/ready ]]; then
        echo "making the stand-in for the GPU machine's python3 in $cache (once)"
        rm -rf "$cache" && python3 -m venv "$cache/venv" \
            && "$cache/venv/bin/python" -m pip install -q --disable-pip-version-check $MACHINE_PACKAGES \
            && touch "$cache/ready" || return 1
    fi
    PY=$cache/venv/bin/python
    # The carried set itself (Python 3.12, its size printed), and the same list for this Python.
    bash "$HERE/wheels.sh" .whl || return 1
    WHEELS=$REPO/.whl
    if [[ $version != 3.12 ]]; then
        WHEELS=$cache/wheels
        bash "$HERE/wheels.sh" "$WHEELS" --python-version "$version" >/dev/null || return 1
    fi
}
# The rehearsal runs under the GPU run's limits; on a CPU that other work keeps busy,
# RESLAB_REHEARSAL_TIME_SCALE=N stretches them N times (.ci/run uses 2: the CPU forms of the tests and DDP steps need more than their GPU limits on 2 cores).
TIME_SCALE=1
if ((REHEARSE)); then
    TIME_SCALE=${RESLAB_REHEARSAL_TIME_SCALE:-1}
    DEVICE=cpu ON_DEVICE=(trainer.accelerator=cpu)
    export RESLAB_GPU_TESTS_ON=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    rehearsal_python || { echo "could not make the rehearsal's environment" >&2; exit 1; }
else
    DEVICE=cuda ON_DEVICE=(trainer=gpu)
    PY=$(command -v python3) WHEELS=${RESLAB_WHEELS:-$REPO/.whl}
fi
START=$SECONDS
summary() { "$PY" "$HERE/summary.py" "$WORK" "$OUT" $( ((REHEARSE)) && echo --rehearsal) "$@"; }

# The setup: what the machine lacks from the wheels, ResLab without dependencies, then the checks.
step_setup() {
    local missing
    missing=$("$PY" - "$HERE/carry.txt" <<'PYTHON'
import importlib.metadata, re, sys
for line in open(sys.argv[1]):
    requirement = line.split("#")[0].strip()
    try:
        importlib.metadata.version(re.split("[=<>!~ ;]", requirement)[0]) if requirement else None
    except importlib.metadata.PackageNotFoundError:
        print(requirement)
PYTHON
) || return 1
    echo "python3: $PY"
    echo "installing what it lacks from $WHEELS:" $missing
    # One pip call, so that ResLab's hydra_plugins and the carried launcher's share one folder.
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
        --disable-pip-version-check --find-links "$WHEELS" --target "$WORK/site" $missing . || return 1
    # One process (a start imports torch and Lightning): the imports, a one-step run, the data.
    "$PY" - "$RESULTS/setup.json" "$DATA" $((REHEARSE ? 1000 : 50000)) "$WORK/jobs/one_step" "${ON_DEVICE[@]}" \
        $missing <<'PYTHON' || return 1
import json, platform, sys

import reslab.train, reslab.tasks.train  # noqa: E401  (reslab.train imports submitit and Hydra)
import hydra_plugins.reslab_launchers.node_parallel_launcher, hydra_plugins.hydra_submitit_launcher  # noqa: E401
import lightning, torch

facts_file, data, images, one_step, on_device, *installed = sys.argv[1:]
sys.argv = ["reslab-train", "data=synthetic", "model.depth=8", "trainer.max_steps=1", "logger=csv", "test=false",
            "trainer.enable_progress_bar=false", on_device, f"hydra.run.dir={one_step}"]
try:
    reslab.train.main()
except SystemExit as exit_:
    if exit_.code not in (0, None):
        raise
from reslab.data import write_cifar_like

write_cifar_like(data, n_train=int(images), n_test=int(images) // 5)
cuda = torch.cuda.is_available()
facts = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})", "python": sys.executable,
         "python_version": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
         "lightning": lightning.__version__, "installed_from_wheels": installed}
open(facts_file, "w").write(json.dumps(facts, indent=1) + "\n")
print(facts)
PYTHON
}

# ----------------------------------------------------------------------------- running a step
# Each step runs as a process group of its own, marked by an environment variable that its
# child processes inherit (a sweep's job processes have process groups of their own): near its
# limit the group gets SIGTERM (jobs save and leave), at the limit SIGKILL, and whatever still
# carries the mark is ended before the next step starts.
run_step() {
    local name=$1 limit=$(($2 * TIME_SCALE)) left=$((TOTAL_LIMIT * TIME_SCALE - (SECONDS - START)))
    OUTCOME=skipped
    if ((left < limit / 2)); then
        echo "=== $name: skipped for time (${left} s left, it needs up to ${limit} s)"
        summary record "$name" skipped 0 0
        return
    fi
    ((limit > left)) && limit=$left
    STEP=$name BUDGET=$((limit - GRACE - 2))
    local mark="reslab-gpu-check-$$-$name" began=$SECONDS signal="" rc pid
    echo "=== $name (at most $limit s)"
    set -m  # the step's own process group
    (export RESLAB_GPU_CHECK_STEP=$mark; "step_$name") >"$LOGS/$name.log" 2>&1 </dev/null &
    pid=$!
    set +m
    RUNNING=("$pid" "$mark")
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        local took=$((SECONDS - began))
        if ((took >= limit)) && [[ $signal != KILL ]]; then
            signal=KILL; kill -KILL -- "-$pid" 2>/dev/null
        elif ((took >= limit - GRACE)) && [[ -z $signal ]]; then
            signal=TERM; echo "--- $name: near its limit, SIGTERM"; kill -TERM -- "-$pid" 2>/dev/null
        elif ((took % 10 == 0)); then
            summary refresh "$name"
        fi
    done
    wait "$pid"; rc=$?
    RUNNING=()
    end_marked "$mark"
    OUTCOME=ok
    if [[ -n $signal ]]; then OUTCOME=timed_out; elif ((rc != 0)); then OUTCOME=failed; fi
    tail -n 20 "$LOGS/$name.log" | sed "s/^/  $name | /"
    echo "=== $name: $OUTCOME (exit $rc) after $((SECONDS - began)) s"
    summary record "$name" "$OUTCOME" "$rc" $((SECONDS - began))
}

end_marked() {  # SIGTERM, then SIGKILL, to every process whose environment carries the mark
    local mark=$1 pids signal
    for signal in TERM KILL; do
        pids=$(grep -lasxz "RESLAB_GPU_CHECK_STEP=$mark" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx "$$")
        [[ -z $pids ]] && return
        echo "--- ending $(echo $pids | wc -w) leftover process(es) of the step with SIG$signal"
        kill -"$signal" $pids 2>/dev/null
        sleep 3
    done
}

RUNNING=()  # the step running now: its process group and its mark
on_exit() {
    if ((${#RUNNING[@]})); then  # the check itself was stopped: so is its step, and all it started
        kill -TERM -- "-${RUNNING[0]}" 2>/dev/null; sleep 2; kill -KILL -- "-${RUNNING[0]}" 2>/dev/null
        end_marked "${RUNNING[1]}"
    fi
    [[ -n ${FINISHED:-} ]] || summary finish $((SECONDS - START))
    rm -rf "$WORK"  # what it held is in $OUT/details.tar.gz
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# ----------------------------------------------------------------------------- the run
export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
run_step setup "$SETUP_LIMIT"
if [[ $OUTCOME != ok ]]; then
    echo "=== the setup failed, so no step can run: see run.log"
    cat "$LOGS/setup.log"
    exit 1
fi
for line in "${STEPS[@]}"; do
    run_step $line
done
summary finish $((SECONDS - START))
FINISHED=1
if ((REHEARSE)); then
    summary check || exit 1
fi
