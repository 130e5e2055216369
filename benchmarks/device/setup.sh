# Sourced by the gpu_*.sh scripts: installs the carried keras / keras-hub
# wheels (.whl/) next to the image's JAX, sets the environment (JAX and torch
# share the GPU, so JAX takes under half of its memory) and records the GPU.
# Results land in $OUT (or ./gpu_results). A script started by another one
# (gpu_all.sh runs gpu_recommend.sh) inherits all this and skips it.
if [ -z "${ILM_DEVICE_SETUP:-}" ]; then
  export OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 TF_CPP_MIN_LOG_LEVEL=2
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  export ILM_DEVICE_SETUP=1
fi
