#!/usr/bin/env bash
# Prepares, here where the package registry is reachable, what one call on the GPU machine needs
# beside the working tree (that machine has torch 2.11, triton 3.6 and Python 3.12, but no registry,
# and ../shared does not travel):
#   .whl/       wheels of what the project needs and that machine lacks: gguf, the packages the test
#               modules import (prompt_toolkit, wcwidth, pexpect, ptyprocess), and a setuptools that
#               builds the editable install with no `wheel` package; all pure Python
#   .testdata/  the test data small enough to travel: stories260K (the SmolLM2 file, 94 MiB, is over
#               the 64 MiB a call carries)
# Both are git-ignored; the device call names them in `carry`. Usage: bash scripts/device_wheels.sh
# (PYTHON=... for another interpreter, TESTDATA=... for another test data folder).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
testdata=${TESTDATA:-../shared/testdata}
wheels=(gguf==0.19.0 prompt_toolkit==3.0.52 wcwidth==0.7.0 pexpect==4.8.0 ptyprocess==0.7.0 setuptools==84.2.1)

rm -rf .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"
count=$(ls .whl/*.whl | wc -l)
if [ "$count" -ne "${#wheels[@]}" ]; then
    echo "error: expected ${#wheels[@]} wheels in .whl/, found $count" >&2
    exit 1
fi

rm -rf .testdata
if [ -d "$testdata/models" ]; then
    mkdir -p .testdata/models
    cp "$testdata"/README.md .testdata/
    cp "$testdata"/models/stories260K.gguf "$testdata"/models/stories260K.greedy200.* \
        "$testdata"/models/LICENSE.stories260K-gguf.txt "$testdata"/models/LICENSE.llama2.c.txt .testdata/models/
else
    echo "note: no test data at $testdata: the check runs without stories260K" >&2
fi

du -sh .whl .testdata 2>/dev/null || true
cat <<'EOF'
On the GPU machine, one call (carry: [".whl", ".testdata"], timeout_s 540):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . && PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out $OUT
EOF
