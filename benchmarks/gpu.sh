#!/usr/bin/env bash
# The GPU checks and figures, in one pass on a machine where torch sees CUDA (run from the repo root):
#   benchmarks/gpu.sh [OUT_DIR]        # default runs/gpu; ≈ 6 min on one H200 with 16 CPU cores
# 1. the tests marked gpu that need no Ray: CUDA scores = CPU scores (500 and 5000 candidates), exact
#    search through torch on CUDA = FAISS's exact search (with the CPU tests of the same files);
# 2. the ranker's latency on 500 and 5000 candidates, CPU beside CUDA (benchmarks/ranking.py);
# 3. retrieval at 1M and 10M items, k = 1000: exact on the GPU through torch beside FAISS exact and
#    IVF on the CPU, one query per call (benchmarks/ann.py).
# Each part's output is also written to OUT_DIR; a failing part does not stop the next.
set -uo pipefail
out=${1:-runs/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
"$python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
"$python" -m pytest -q -p no:cacheprovider tests/app/retrieval/test_gpu_exact.py \
  tests/app/ranking/test_scoring_devices.py 2>&1 | tee "$out/tests.txt" || status=1
"$python" benchmarks/ranking.py latency --candidates 500,5000 --repeats 20 2>&1 | tee "$out/ranking.txt" || status=1
"$python" benchmarks/ann.py --sizes 1m,10m --kinds exact,exact:gpu,ivf --build-threads "$(nproc)" \
  2>&1 | tee "$out/ann.txt" || status=1
exit $status
