#!/usr/bin/env bash
# The GPU benchmarks in one run, as run on the lent NVIDIA H100/H200 machine (JAX backend; that machine has no
# TensorFlow). Each part has its own time limit, so one that overruns costs only its own numbers.
#
#   bash experiments/gpu_suite.sh [OUT [PART ...]]   (OUT: where results files go, default experiments/results;
#                                                    PART: overhead, packed, executor; default all three)
#
# 1. overhead of run_study against a bare build/fit/evaluate loop and KerasTuner, on real MNIST
#    (experiments.bench overhead --mnist; file bench_overhead_mnist_<gpu>.json);
# 2. packed populations: 8 digits MLPs one after another vs packed, the course's 50 MNIST MLPs packed, and 3 of
#    them one after another for the ratio (experiments.packed; packed_<gpu>.json);
# 3. trials per hour in-process, with 1 and 8 worker processes on the GPU, and packed 8
#    (experiments.executor_bench; executor_<gpu>.json).
# Render them into RESULTS.md afterwards with `python -m experiments.bench --render-only`. A part that overruns its
# limit writes no results file: keep the log as experiments/results/gpu_suite_<gpu>_<date>.log and run
# `python -m experiments.gpu_suite_log THAT_LOG` to turn what it printed into a results file (targets included).
#
# On the lent machine (no TensorFlow, Keras or tuning stack there): here, `bash ../shared/gpu/fetch-wheels.sh`
# and `mkdir -p .data && cp ../shared/data/mnist.npz .data/`; carry `.whl` and `.data`; the device command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash experiments/gpu_suite.sh $OUT overhead
#
# Time on an H100 (2026-11-27, results/gpu_suite_h100_2026-11-27.log): small-model trials there are dominated by
# XLA compiling each new model (a 3-epoch digits trial ~6 s, a 3-epoch MNIST trial ~3 s once compiled shapes
# repeat), so all three parts at these defaults need about 10 minutes: run them as two device calls
# (`overhead`, then `packed executor`). Overhead 3:3:2 without warm-up took 204 s; the packed part's first two
# sections 61 s.
set -u
out=${1:-experiments/results}
mkdir -p "$out"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
[ -f .data/mnist.npz ] && export HPO_MNIST_PATH=${HPO_MNIST_PATH:-$PWD/.data/mnist.npz}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1

part() {  # part LIMIT_S MODULE ARGS...
    local limit=$1; shift
    local t0=$SECONDS
    echo "== python -m $* (limit ${limit} s)"
    timeout "$limit" python3 -m "$@"
    echo "== rc=$? after $((SECONDS - t0)) s"
}

parts=" ${*:2} "
[ "$parts" = "  " ] && parts=" overhead packed executor "
want() { [[ "$parts" == *" $1 "* ]]; }

want overhead && part "${OVERHEAD_LIMIT_S:-420}" experiments.bench overhead --mnist --overhead "${OVERHEAD_POINTS:-3:3:3}" \
    --out "$out" --runs /tmp/hpo-gpu-bench --results-md /tmp/hpo-gpu-bench/RESULTS.md
want packed && part "${PACKED_LIMIT_S:-150}" experiments.packed --members 8 --epochs 20 --mnist-sequential 3 --out "$out"
# Workers take no preallocated share of the card (hpo.execution.pool sets that for its workers; the study's own
# process runs the in-process rows and must not hold 75% of the memory while the workers start).
want executor && XLA_PYTHON_CLIENT_PREALLOCATE=false part "${EXECUTOR_LIMIT_S:-270}" experiments.executor_bench \
    --trials "${EXECUTOR_TRIALS:-16}" --workers 1 8 --packs 8 --epochs 3 --out "$out"
ls -la "$out"
