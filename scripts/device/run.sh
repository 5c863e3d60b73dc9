#!/usr/bin/env bash
# The accelerator runner's entry point on the device machine (see scripts/device/driver.py):
#   bash scripts/device/run.sh receive                 # one call per carried dataset piece
#   bash scripts/device/run.sh train PLAN [--budget-s S] # last call: carry .device/wheels too
# It installs the carried wheels (keras, grain and the dependencies the device image lacks)
# into /tmp/ka-device/site once per warm machine, selects the JAX backend, and runs the driver.
# Outputs go to $OUT (the device tool brings back what is there).
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGING=${KA_DEVICE_STAGING:-/tmp/ka-device}
mkdir -p "$STAGING"
if [ -d .device/wheels ] && [ ! -f "$STAGING/site/.installed" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$STAGING/site" .device/wheels/*.whl
  touch "$STAGING/site/.installed"
fi
if [ -d "$STAGING/site" ]; then export PYTHONPATH="$STAGING/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"; else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"; fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 KA_DEVICE_STAGING="$STAGING"
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true; fi
exec python3 scripts/device/driver.py "$@"
