#!/usr/bin/env bash
# The GPU check: every gpu-marked test, then the GPU benchmarks, each writing JSON into
# benchmarks/gpu/results/, then one summary (summary.json, and a table on the console).
#
#   bash benchmarks/gpu/run.sh              # on one H100/H200: under 8 minutes
#   bash benchmarks/gpu/run.sh --dry-run    # without a GPU: the same steps on the CPU at tiny
#                                           # sizes, results into a temporary folder (~5 min on 2 cores)
#
# Steps, most important first, each held to its time (seconds) so the whole keeps to 8 minutes:
#   tests         pytest -m gpu: data on the device, bf16, a 1-GPU DDP run, node_parallel GPU
#                 assignment and memory shares, no CUDA sync between flushes          (90)
#   host_syncs    reads / CUDA synchronisations per training step, set_sync_debug_mode (30)
#   cifar         ResNet-20/56/110, data on the device: fp32, bf16, +channels_last, +compile
#                 (compiled as the time allows); FLOP/s, share of peak, Table 6's
#                 projected time on one GPU                                           (160)
#   loop          ResLab vs a plain PyTorch loop, ResNet-56 CIFAR-shape, same GPU     (55)
#   resnet50      ImageNet-shape ResNet-50 bf16, synthetic, images/s                 (40)
#   jobs_per_gpu  1 vs 2 vs 4 jobs sharing the GPU (hydra/launcher=node_parallel)     (75)
#
# Python: $PYTHON if set; else .venv when it imports ResLab; else a new .venv that sees the
# system's packages (an installed torch is used as it is, whatever its version) with ResLab
# installed from this tree without dependencies, and whatever is still missing installed from a
# wheel folder ($RESLAB_WHEELS, default .whl/ at the repository's root) or, online, the index.
# Nothing needs the network otherwise.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
START=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true PYTHONWARNINGS=ignore

TIME_SCALE=1
if (( DRY_RUN )); then
    RESULTS=${RESULTS:-$(mktemp -d -t reslab-gpu-dry-run-XXXX)}
    TIME_SCALE=3  # a CPU starts processes and trains more slowly than the GPU machine
    export RESLAB_GPU_TESTS_ON=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    RESULTS=${RESULTS:-benchmarks/gpu/results}
fi
mkdir -p "$RESULTS"
STEPS_FILE="$RESULTS/steps.tsv"
: >"$STEPS_FILE"

# ----------------------------------------------------------------------------- Python
NEEDED_MODULES="torch torchvision lightning hydra omegaconf torchmetrics sklearn matplotlib rich cloudpickle pytest pytest_timeout"
imports_all() { "$1" -c "import reslab.conf, $(echo $NEEDED_MODULES | tr ' ' ',')" >/dev/null 2>&1; }

choose_python() {
    if [[ -n "${PYTHON:-}" ]]; then return; fi
    if [[ -x .venv/bin/python ]] && imports_all .venv/bin/python; then PYTHON=.venv/bin/python; return; fi
    local base
    base=$(command -v python3 || command -v python) || { echo "no python3 found" >&2; exit 1; }
    [[ -x .venv/bin/python ]] || "$base" -m venv --system-site-packages .venv || { echo "cannot make .venv" >&2; exit 1; }
    PYTHON=.venv/bin/python
    local wheels=${RESLAB_WHEELS:-.whl} pip_from=()
    [[ -d "$wheels" ]] && pip_from=(--no-index --find-links "$wheels")
    # ResLab itself, from this working tree; its dependencies stay as the system has them.
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
        || "$PYTHON" -m pip install -q --no-deps "${pip_from[@]}" -e . \
        || { echo "could not install ResLab into .venv" >&2; exit 1; }
    local missing
    missing=$("$PYTHON" - <<'EOF'
import importlib.util
packages = {"torch": "torch", "torchvision": "torchvision", "lightning": "lightning", "hydra": "hydra-core",
            "omegaconf": "omegaconf", "torchmetrics": "torchmetrics", "sklearn": "scikit-learn",
            "matplotlib": "matplotlib", "rich": "rich", "cloudpickle": "cloudpickle", "pytest": "pytest",
            "pytest_timeout": "pytest-timeout", "wandb": "wandb"}
print(" ".join(name for module, name in packages.items() if importlib.util.find_spec(module) is None))
EOF
)
    if [[ -n "$missing" ]]; then
        echo "installing what this Python lacks: $missing"
        "$PYTHON" -m pip install -q --retries 1 --timeout 15 "${pip_from[@]}" $missing \
            || echo "could not install: $missing (carry wheels into .whl/; see benchmarks/README.md)" >&2
    fi
}
choose_python
if ! imports_all "$PYTHON"; then
    echo "$PYTHON cannot import ResLab and its dependencies ($NEEDED_MODULES); see benchmarks/README.md" >&2
    exit 1
fi
"$PYTHON" -c "import torch, lightning; print(f'python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__}, lightning {lightning.__version__}, CUDA available: {torch.cuda.is_available()}')"
if (( ! DRY_RUN )) && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device: run with --dry-run for the CPU check" >&2
    exit 1
fi
LOGGERS=csv,default
"$PYTHON" -c "import wandb" 2>/dev/null || LOGGERS=csv  # the W&B variant only where W&B is installed

# ----------------------------------------------------------------------------- steps
# step NAME SECONDS COMMAND...: run with a time limit, note the outcome; a failed step does not stop the others.
step() {
    local name=$1 limit=$(( $2 * TIME_SCALE ))
    shift 2
    echo
    echo "=== $name (at most ${limit} s)"
    local began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    local rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - began ))" >>"$STEPS_FILE"
    echo "=== $name: exit $rc after $(( $(date +%s) - began )) s"
}

if (( DRY_RUN )); then
    TINY=(--device cpu --tiny)
    LOOP=(--device cpu --case cifar56 --steps 12 --repeats 1 --threads 1 --loggers csv)
    SYNCS=(trainer.accelerator=cpu data=synthetic model.depth=8 trainer.max_steps=30 trainer.log_every_n_steps=10)
else
    TINY=(--device cuda)
    LOOP=(--device cuda --case cifar56 --repeats 2 --loggers "$LOGGERS")
    SYNCS=(trainer=gpu data=synthetic data.num_train=8192 model.depth=20 trainer.max_steps=300 trainer.log_every_n_steps=50)
fi

step tests 90 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --timeout 200 --junitxml="$RESULTS/gpu_tests.xml" tests
step host_syncs 30 "$PYTHON" benchmarks/host_syncs.py --json "$RESULTS/host_syncs.json" "${SYNCS[@]}"
step cifar 160 "$PYTHON" benchmarks/gpu/gpu_bench.py cifar "${TINY[@]}" --budget-s $(( 150 * TIME_SCALE )) --json "$RESULTS/cifar_resnets.json"
step loop 55 "$PYTHON" benchmarks/loop_overhead.py "${LOOP[@]}" --json "$RESULTS/loop_overhead.json"
step resnet50 40 "$PYTHON" benchmarks/gpu/gpu_bench.py resnet50 "${TINY[@]}" --budget-s $(( 38 * TIME_SCALE )) --json "$RESULTS/resnet50.json"
step jobs_per_gpu 75 "$PYTHON" benchmarks/gpu/gpu_bench.py jobs-per-gpu "${TINY[@]}" --budget-s $(( 70 * TIME_SCALE )) --json "$RESULTS/jobs_per_gpu.json"

# ----------------------------------------------------------------------------- summary
"$PYTHON" benchmarks/gpu/summary.py "$RESULTS" "$(( $(date +%s) - START ))" $( (( DRY_RUN )) && echo --dry-run )
echo "results: $RESULTS"
