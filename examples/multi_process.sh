#!/usr/bin/env bash
# Two processes on this machine, 2 virtual CPU devices each, training the
# Q-Former data-parallel over all 4 devices (examples/multi_process.py).
#     bash examples/multi_process.sh [NUM_PROCESSES] [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2}
port=${2:-12345}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for ((i = 0; i < n; i++)); do
  python examples/multi_process.py --process_id "$i" --num_processes "$n" \
    --coordinator "127.0.0.1:$port" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
