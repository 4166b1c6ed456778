#!/usr/bin/env bash
# The GPU check of crossentropy as ONE command of the device tool: the GPU tests, then
# benchmarks/gpu.py, on a lent H100 (image: Python 3.12, torch 2.11 + CUDA 13, triton 3.6,
# no internet; crossentropy is not installed there and runs from src/ through PYTHONPATH).
#
# 1. Here, once per checkout: the wheels of what the image lacks, into .whl/ (ignored by git).
#    The image has numpy, numba, llvmlite, pytest, hypothesis, matplotlib; it lacks
#    array-api-compat (a dependency of crossentropy), liger-kernel and cut-cross-entropy (the
#    benchmark's rivals). All three are pure Python (py3-none-any) and installed with --no-deps:
#    liger-kernel 0.8.5 asks for torch>=2.1.2, triton>=2.3.1; cut-cross-entropy 25.1.1 for torch
#    and triton (its extras, transformers and the like, are not needed); both in the image.
#
#      mkdir -p .git/info && echo /.whl/ >> .git/info/exclude
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#        liger-kernel==0.8.5 array-api-compat==1.16.0 cut-cross-entropy==25.1.1
#
# 2. The device tool's call (one run; about 1-2 minutes to start the machine, then under 8
#    minutes of command: the tests get at most 150 s, the benchmark's time budget is what is left
#    of 450 s, at most 400 s, of which the linear cross-entropy section, run first, takes at most
#    130 s (about a minute expected) and the softmax section the rest; gpu.py stops measuring 20 s
#    before its budget ends and writes its files as it goes):
#
#      run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
#
#    With 15 minutes of device time per session there is no time for a second full run: if
#    the first is cut short, rerun a part with arguments passed on to gpu.py, for example
#    run(command="bash benchmarks/gpu_run.sh --shapes 32768x262144 --dtypes float32",
#        carry=[".whl"], timeout_s=400), or the linear section alone,
#    run(command="bash benchmarks/gpu_run.sh --sections linear", carry=[".whl"], timeout_s=400),
#    and call give_back when done.
#
# 3. What comes back, under the reply's files_at: gpu.md, gpu.json, gpu.png (the results),
#    bench.log (the benchmark's output), tests.log (pytest's), env.txt (nvidia-smi, versions).
#    Read gpu.md's spot checks first (a ✗ or FAIL means a wrong kernel, not a slow one), then
#    commit the results (not the logs) with the device and date in the message:
#
#      cp FILES_AT/gpu.md FILES_AT/gpu.json FILES_AT/gpu.png benchmarks/results/
#      git add benchmarks/results/gpu.md benchmarks/results/gpu.json benchmarks/results/gpu.png
#      git commit -m "GPU benchmark on <GPU> (<date>, <commit measured>): <the headline numbers, as measured>"
#
# Exit status: that of the benchmark (1: a spot check of ours failed, or ours missed the linear
# section's accuracy targets), else that of the tests.
set -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.." || exit 2
start=$SECONDS
OUT=${OUT:-$(mktemp -d)}
SITE=${SITE:-/tmp/site} # where the wheels go (the device README's recipe); another folder for a trial run elsewhere
mkdir -p "$OUT"
echo "output folder: $OUT"

shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "gpu_run.sh: no wheels in .whl/: prepare them (step 1 in this file's header) and pass carry=[\".whl\"]" >&2
    exit 3
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" || exit 3
export PYTHONPATH=$SITE:$PWD/src

{
    echo "== nvidia-smi"
    nvidia-smi
    echo "== versions"
    python3 - <<'EOF'
import importlib.metadata as md
import platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("triton", "liger-kernel", "cut-cross-entropy", "array-api-compat", "numpy", "numba", "matplotlib", "pytest", "hypothesis"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.get_device_name(0), f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
import crossentropy
print("crossentropy", crossentropy.__version__, "from", crossentropy.__file__)
EOF
} 2>&1 | tee "$OUT/env.txt"

tests=()
# The GPU cases (all but the device axis's cpu ones), end-to-end files first.
for f in tests/torch/test_torch_devices.py tests/kernels/test_kernels_backends.py tests/kernels/test_kernels_triton_scale.py \
    tests/kernels/test_kernels_triton_softmax.py tests/kernels/test_kernels_triton_sigmoid.py tests/kernels/test_kernels_triton_linear.py \
    tests/torch/test_torch_linear_pytorch.py; do
    [[ -e $f ]] && tests+=("$f")
done
echo "== GPU tests: ${tests[*]}"
if ((${#tests[@]})); then
    timeout 150 python3 -m pytest -q -p no:cacheprovider -k "not cpu" "${tests[@]}" 2>&1 | tee "$OUT/tests.log"
    tests_rc=$?
else
    echo "no GPU test file in this checkout" | tee "$OUT/tests.log"
    tests_rc=0
fi
echo "== tests exit status: $tests_rc (124: stopped at 150 s)"

# The whole script under 8 minutes: the benchmark ends about 10 s after its budget (imports, files).
budget=$((450 - (SECONDS - start)))
((budget > 400)) && budget=400
echo "== benchmark, time budget ${budget} s"
python3 benchmarks/gpu.py --out "$OUT" --budget-s "$budget" "$@" 2>&1 | tee "$OUT/bench.log"
bench_rc=$?
echo "== tests exit status: $tests_rc; benchmark exit status: $bench_rc; $((SECONDS - start)) s in all"
((bench_rc != 0)) && exit "$bench_rc"
exit "$tests_rc"
