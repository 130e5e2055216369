#!/usr/bin/env bash
# GPU checks and Q-Former throughput on a lent GPU machine (JAX in its image;
# keras and keras-hub carried as wheels in .whl/, see setup.sh).
# Results land in $OUT (or ./gpu_results).
set -u
source "$(dirname "$0")/setup.sh"
python3 benchmarks/gpu_checks.py 2>&1 | grep -E "^(k=|GPU|devices)" | tee "$OUT/gpu_checks.txt"
for width in 768 1024; do
  heads=$(( width / 64 ))
  timeout 200 python3 benchmarks/throughput.py --sections qformer --dtype bfloat16 \
    --batch_size 256 --set qformer_hidden=$width --set qformer_layers=8 --set qformer_heads=$heads \
    --device cuda --torch_compile --peak_tflops 989 \
    --output "$OUT/throughput_gpu_$width.md" 2>&1 | grep -E "^\||parameters|Error|error" | tail -20
done
