#!/usr/bin/env bash
# One-shot check on a lent CUDA machine (it has torch; diffusers may travel as wheels in
# .whl/): the CUDA tests of the core, then bench_core's GPU parts (c: UNet forward with and
# without capture, SD 1.5 / 2.1-base at 512 px fp16; d: DiffSegSegmenter images/s, batch 1
# and 8, with the per-stage split), then bench_e2e's CUDA rows (issue 19: a frame stage by
# stage in float16 beside diffusers' default passes, images/s at batch 1 and 8, `diffseg
# video` frames/s every frame, with keyframes and auto). Usage, in the repository root:
#   bash benchmarks/gpu_check.sh [OUTDIR]
set -uo pipefail
out=${1:-.}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m "not slow" -o addopts="" \
  tests/diffseg_core/test_segmenter.py tests/diffseg_core/test_capture.py tests/diffseg_core/test_models.py \
  tests/diffseg_core/test_by_hand.py -rs 2>&1 | tail -20 | tee "$out/pytest_cuda.txt"
timeout 300 python3 benchmarks/bench_core.py --quick --skip a,b 2>&1 | tee "$out/bench_core_cuda.txt"
timeout 300 python3 benchmarks/bench_e2e.py --dtype "" --frames 16 --rounds 3 2>&1 | tee "$out/bench_e2e_cuda.txt"
