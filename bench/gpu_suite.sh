#!/usr/bin/env bash
# The accelerator evidence of issue 16 in one prepared script (also `make bench-gpu`):
#   part A (<= 5 min): training and inference images/s of resnet18 and resnet50 (bf16, batch
#          256, 224x224, synthetic data on the device, steady state after warm-up, compile
#          time apart) through jaxcnn's public train step (bench/throughput.py), and
#          torchvision's same models eager and torch.compile (bench/torch_ref.py), model by
#          model in the same command;
#   part B (<= 4 min): the CIFAR-10 speedrun, jaxcnn (bench/cifar_speedrun.py) then
#          airbench94's own code (bench/airbench_ref.py), 5 runs each on the same JPEG-derived
#          arrays (bench/cifar_data.py), and bench/topk.py (10,000 bf16 queries x 1,000,000 x
#          512, k=10) against torch matmul + topk.
# Every result is a JSON line in $OUT/partA.jsonl / $OUT/partB.jsonl (stderr in .log beside
# them), $OUT/env.json records the machine, and $OUT/summary.md is the tables with ratios
# (bench/summarize.py). Each step runs under `timeout` within its part's hard limit.
#
#   bash bench/gpu_suite.sh --part A        # on the GPU machine; $OUT set by the device tool
#   bash bench/gpu_suite.sh --smoke         # here, on the CPU: tiny sizes, the same steps
#
# Before a GPU session, on a machine with PyPI: `bash bench/fetch_wheels.sh` (-> .whl/) and
# `python bench/cifar_data.py pack` (-> data/cifar10-jpg.tar.gz); carry both (bench/RESULTS.md
# has the two exact commands). The GPU image lacks the wheels' packages; they are installed
# into $SITE without touching the image's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PART=all
SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --part) PART=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        *) echo "usage: $0 [--part A|B|all] [--smoke]" >&2; exit 2 ;;
    esac
done
case "$PART" in A|B|all) ;; *) echo "--part must be A, B or all" >&2; exit 2 ;; esac

JAX_PY=${JAX_PY:-python3}      # an interpreter with jax (the GPU image: python3 has both)
TORCH_PY=${TORCH_PY:-python3}  # an interpreter with torch + torchvision
SITE=${SITE:-/tmp/site}
if [ -z "${OUT:-}" ]; then
    OUT=$(mktemp -d /tmp/gpu_suite_out.XXXXXX)
    echo "OUT not set: writing to $OUT" >&2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_suite_work.XXXXXX)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false

# --- sizes: the issue's on a GPU, tiny ones for the CPU smoke (same steps, same scripts) ---
if [ "$SMOKE" = 1 ]; then
    TP_ARGS=(--batch 4 --size 32 --warmup 1 --steps 2)
    # torch.compile's Inductor needs many minutes of C++ code generation on a shared 2-core
    # CPU: the smoke compiles with the 'eager' backend (Dynamo graph capture, same calls).
    TORCH_ARGS=(--compile-backend eager)
    MODELS=${SMOKE_MODELS:-resnet18}  # resnet50 is the same two scripts with another name
    SPEEDRUN_ARGS=(--runs 2 --epochs 1 --batch-size 64 --eval-batch-size 100 --whiten-images 200)
    AIRBENCH_ARGS=(--runs 2 --epochs 1 --batch-size 64 --smoke)
    DATA_ARGS=(--limit-per-class 20)
    TOPK_ARGS=(--queries 64 --database 4096 --dim 32 --repeats 2 --block 1024 --query-block 64)
    CAP_SCALE=8  # a shared 2-core CPU compiles ResNets and torch.compile graphs slowly
    LIMIT_A=2400; LIMIT_B=2400
else
    TP_ARGS=(--batch 256 --size 224 --warmup 5 --steps 30)
    TORCH_ARGS=()
    MODELS="resnet18 resnet50"
    SPEEDRUN_ARGS=(--runs 5)
    AIRBENCH_ARGS=(--runs 5)
    DATA_ARGS=()
    TOPK_ARGS=(--repeats 3)
    CAP_SCALE=1
    LIMIT_A=${LIMIT_A:-300}; LIMIT_B=${LIMIT_B:-240}
fi

# --- wheels: what the image lacks (bench/fetch_wheels.sh), into $SITE ---
WHEELS=()
for whl in .whl/*.whl; do
    [ -e "$whl" ] || continue
    # The smoke's interpreters may be another Python than the image's 3.12: pure wheels only.
    if [ "$SMOKE" = 1 ] && [[ "$whl" != *-py3-none-any.whl ]]; then continue; fi
    WHEELS+=("$whl")
done
if [ ${#WHEELS[@]} -gt 0 ]; then
    for py in $(printf '%s\n' "$JAX_PY" "$TORCH_PY" | sort -u); do
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${WHEELS[@]}" || { echo "wheel install failed ($py)" >&2; exit 1; }
    done
else
    echo "no wheels in .whl/ (bash bench/fetch_wheels.sh): using the interpreters' packages" >&2
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"

# --- the machine ---
{
    echo "{\"date\": \"$(date -u +%FT%TZ)\", \"smoke\": $SMOKE, \"nproc\": $(nproc),"
    echo " \"uptime\": \"$(uptime | sed 's/.*load/load/')\","
    echo " \"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)\","
    echo " \"git\": \"$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')\","
    echo " \"jax\": $("$JAX_PY" -c 'import json, jax, flax, optax; print(json.dumps({"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__, "devices": [str(d) for d in jax.devices()]}))' 2>&1 | tail -1 | sed 's/^[^{].*/"&"/'),"
    echo " \"torch\": $("$TORCH_PY" -c 'import json, torch, torchvision; print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda}))' 2>&1 | tail -1 | sed 's/^[^{].*/"&"/')}"
} > "$OUT/env.json"
cat "$OUT/env.json"

# step NAME PART_FILE DEADLINE CAP_SECONDS CMD...: run CMD under `timeout` (its cap, or what
# is left of the part), its JSON lines to PART_FILE.jsonl, everything else to PART_FILE.log,
# then one {"step": ...} record with its exit status and seconds.
step() {
    local name=$1 file=$2 deadline=$3 cap=$(( $4 * CAP_SCALE ))
    shift 4
    local left=$((deadline - $(date +%s)))
    local limit=$(( cap < left ? cap : left ))
    if [ "$limit" -le 5 ]; then
        echo "{\"step\": \"$name\", \"skipped\": \"part time limit reached\"}" >> "$file.jsonl"
        return
    fi
    echo "=== $name (limit ${limit}s): $*" | tee -a "$file.log" >&2
    local t0 t1 rc
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" 2>> "$file.log" | tee -a "$file.jsonl"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s%N)
    local ms=$(( (t1 - t0) / 1000000 ))
    printf '{"step": "%s", "rc": %d, "seconds": %d.%03d, "limit": %d}\n' \
        "$name" "$rc" $((ms / 1000)) $((ms % 1000)) "$limit" | tee -a "$file.jsonl"
    [ "$rc" = 0 ] || tail -n 30 "$file.log" >&2
}

if [ "$PART" = A ] || [ "$PART" = all ]; then
    DEADLINE=$(( $(date +%s) + LIMIT_A ))
    F="$OUT/partA"
    for model in $MODELS; do
        step "jaxcnn-$model" "$F" "$DEADLINE" 100 \
            "$JAX_PY" bench/throughput.py --model "$model" --bf16 "${TP_ARGS[@]}"
        step "torch-$model" "$F" "$DEADLINE" 150 \
            "$TORCH_PY" bench/torch_ref.py --model "$model" --modes eager,compile \
            "${TP_ARGS[@]}" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"}
    done
fi

if [ "$PART" = B ] || [ "$PART" = all ]; then
    DEADLINE=$(( $(date +%s) + LIMIT_B ))
    F="$OUT/partB"
    step "cifar-data" "$F" "$DEADLINE" 60 \
        "$TORCH_PY" bench/cifar_data.py prepare --out "$WORK/cifar10_uint8.npz" "${DATA_ARGS[@]}"
    step "speedrun-jaxcnn" "$F" "$DEADLINE" 100 \
        "$JAX_PY" bench/cifar_speedrun.py --data "$WORK/cifar10_uint8.npz" "${SPEEDRUN_ARGS[@]}"
    step "speedrun-airbench94" "$F" "$DEADLINE" 80 \
        "$TORCH_PY" bench/airbench_ref.py --data-dir "$WORK/airbench" "${AIRBENCH_ARGS[@]}"
    step "topk" "$F" "$DEADLINE" 90 \
        "$JAX_PY" bench/topk.py --torch-python "$TORCH_PY" "${TOPK_ARGS[@]}"
fi

# Keep the logs under the device tool's 16 MiB per file.
for f in "$OUT"/*.log; do
    [ -e "$f" ] && [ "$(stat -c %s "$f")" -gt 4000000 ] && tail -c 4000000 "$f" > "$f.tmp" \
        && mv "$f.tmp" "$f"
done
"$JAX_PY" bench/summarize.py "$OUT" | tee "$OUT/summary.md"
rm -rf "$WORK"
