#!/usr/bin/env bash
# Issue #23's GPU measurements in one device call of under 6 minutes, on the lent NVIDIA H100/H200 machine (JAX
# backend; that machine has JAX and PyTorch with CUDA but no TensorFlow, Keras or tuning stack).
#
#   bash experiments/gpu_suite.sh [OUT [ARGS ...]]   (OUT: where results go, default experiments/results;
#                                                    ARGS: passed to python -m experiments.gpu_suite, e.g. --smoke,
#                                                    --parts mnist50, --repeats 2, --budget-s 330)
#
# Runs `python -m experiments.gpu_suite` (its docstring says what it measures): the course's 50 MNIST MLPs
# packed (target <= 10 s wall including compilation) and a 16-trial small-model search one at a time, packed,
# on 4 worker processes and on 2 workers training packs (target >= 4x the trials per hour of one at a time).
# Every variant runs in a fresh process; each result is appended to OUT/gpu_suite_<gpu>_<date>.jsonl as soon as
# its process ends, with the card, XLA_FLAGS, JAX's compilation-cache folder and matmul precision; the last line
# states the targets. The whole run stays within --budget-s (default 330 s); a variant stopped at its limit keeps
# what it measured so far. Nothing here needs a GPU: `bash experiments/gpu_suite.sh /tmp/out --smoke` checks the
# path at toy sizes on a CPU (tests/test_gpu_suite.py does, under TensorFlow and under JAX on the CPU).
#
# On the lent machine: here, `bash ../shared/gpu/fetch-wheels.sh` and
# `mkdir -p .data && cp ../shared/data/mnist.npz .data/`; carry `.whl` and `.data`; the device command
# (timeout_s 420: pip ~20 s, the suite <= 330 s, start-up and copying back):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash experiments/gpu_suite.sh $OUT
# then copy $OUT/gpu_suite_*.jsonl into experiments/results/ here.
#
# History: on an H100 (2026-11-27, results/gpu_suite_h100_2026-11-27.log, the previous suite) 32 in-process digits
# trials of 3 epochs did not finish in 200 s and the 50 MNIST MLPs packed took 37.7 s; that suite ran its variants
# in one process and wrote only at the end of each part (experiments.gpu_suite_log recovers its numbers from the
# log).
set -u
py=${PYTHON:-python3}  # the interpreter (default python3)
out=${1:-experiments/results}
mkdir -p "$out"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
[ -f .data/mnist.npz ] && export HPO_MNIST_PATH=${HPO_MNIST_PATH:-$PWD/.data/mnist.npz}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import keras; print('keras', keras.__version__, 'backend', keras.backend.backend())" || exit 1
"$py" -m experiments.gpu_suite --out "$out" "${@:2}"
rc=$?
ls -la "$out"
exit $rc
