#!/usr/bin/env bash
# recommend() (JAX, bf16) vs HF transformers trie-constrained generate (CUDA,
# bf16) at the peer config of ../shared/notes/stack-facts.md: random Llama
# decoder, 8 layers, hidden 768, vocabulary 32000, prompts of 64 tokens,
# batch 32, 10 beams, 1,349 items of 6 tokens (+ end token). Also checks
# cached greedy == uncached greedy in bf16 and that both searches return
# valid, distinct catalogue items. TensorFlow is blocked (not in the image).
# Plain XLA attention (--noflash_attention): cuDNN flash attention has
# rejected some shapes on this stack (stack-facts.md).
# Run from the repository root; results land in $OUT (or ./gpu_results).
# Budget: ~1 min install/imports, < 3 min for the run.
set -u
source "$(dirname "$0")/setup.sh"
timeout 200 python3 benchmarks/recommend_throughput.py --block_tensorflow \
  --dtype=bfloat16 --device=cuda --num_layers=8 --hidden_dim=768 \
  --num_heads=12 --num_kv_heads=12 --intermediate_dim=2048 \
  --vocabulary_size=32000 --num_items=1349 --prompt_tokens=64 \
  --num_prompts=640 --peer_prompts=320 --batch_size=32 --num_beams=10 \
  --repeats=3 --check_greedy --noflash_attention --output="$OUT/recommend_throughput_gpu.md" \
  > "$OUT/recommend_gpu.log" 2>&1
echo "exit $?" >> "$OUT/recommend_gpu.log"
grep -vE "^(I0000|W0000|WARNING: All)" "$OUT/recommend_gpu.log" | tail -40
