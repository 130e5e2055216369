#!/usr/bin/env bash
# One device session: Q-Former step variants (mixed vs pure bf16 weights,
# steps_per_execution) against HF, then recommend() against HF generate.
set -u
OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 170 python3 benchmarks/throughput.py --sections qformer --dtype bfloat16 \
  --batch_size 256 --hidden_dim 768 --num_layers 8 --num_heads 12 \
  --keras_policies mixed_bfloat16,bfloat16 --steps_per_execution 4 \
  --device cuda --torch_compile --peak_tflops 989 \
  --output "$OUT/throughput_gpu_768_variants.md" 2>&1 | grep -E "^\||parameters|Error" | tail -12
bash benchmarks/device/gpu_recommend.sh
