#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what scripts/gpu_check.py needs on a lent GPU machine, in two carries:
#   .gpu/call1: part 1 of SmolLM2's GGUF file (50 MiB), GSM8K (gzipped), SmolLM2's config and tokenizer,
#               and wheels for what the machine lacks (trl, datasets and its dill/multiprocess, gguf);
#   .gpu/call2: part 2 of the GGUF file (~44 MiB).
# Each holds MANIFEST.json (sha256 of the file and of each part); the script fails if a call would carry
# more than 62 MiB with the repository. Run here, in the repository root, before the device calls:
#   scripts/gpu_prepare.sh [DIR]        (DIR: default .gpu)
# Environment: PYTHON (default .venv/bin/python); SKIP_WHEELS=1 (no download: the CPU smoke test);
# SMOLLM2_CHECKPOINT=path (an already converted checkpoint, for the config and tokenizer; else one is
# converted once into DIR/prep). The machine: Python 3.12, x86-64; torch, transformers, accelerate, peft,
# pandas, pyarrow, xxhash, fsspec, huggingface_hub are there (KINDS.md), so only these travel.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu}
PY=${PYTHON:-.venv/bin/python}
WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0)

mkdir -p "$DIR/call1/whl" "$DIR/call2"
if [[ "${SKIP_WHEELS:-0}" != 1 ]]; then
  rm -f "$DIR"/call1/whl/*.whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DIR/call1/whl" "${WHEELS[@]}"
fi
"$PY" scripts/gpu_check.py --prepare --gpu-dir "$DIR"
du -sh "$DIR/call1" "$DIR/call2"
