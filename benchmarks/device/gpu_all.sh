#!/usr/bin/env bash
# One device session, most wanted first: the Q-Former step profile on the
# GPU (kernels by sub-layer, device busy time, MFU, single kernels beside
# torch), then the Q-Former step variants (mixed vs pure bf16 weights,
# steps_per_execution) against HF, then recommend() against HF generate.
set -u
source "$(dirname "$0")/setup.sh"
SHAPE="--batch_size 256 --set qformer_hidden=768 --set qformer_layers=8 --set qformer_heads=12"
timeout 150 python3 benchmarks/profile_qformer_step.py --device cuda \
  --dtype bfloat16 $SHAPE --peak_tflops 989 \
  --output "$OUT/profile_qformer_step_gpu.md" > "$OUT/profile_gpu.log" 2>&1
echo "profile exit $?"; grep -E "^\||TFLOP|busy|Error" "$OUT/profile_gpu.log" | head -30
timeout 170 python3 benchmarks/throughput.py --sections qformer --dtype bfloat16 \
  $SHAPE --keras_policies mixed_bfloat16,bfloat16 --steps_per_execution 4 \
  --device cuda --torch_compile --peak_tflops 989 \
  --output "$OUT/throughput_gpu_768_variants.md" 2>&1 | grep -E "^\||parameters|Error" | tail -12
bash benchmarks/device/gpu_recommend.sh
