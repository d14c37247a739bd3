#!/usr/bin/env bash
# bench/gpu_check.sh: verify imgclass's GPU path on a machine with one or more GPUs.
#
# Assumes the repository is checked out and its environment set up:
#     pip install torch        # a CUDA build
#     pip install -e .
# then, from the repository root:
#     bash bench/gpu_check.sh                  # the real check (needs CUDA)
#     bash bench/gpu_check.sh --cpu-dry-run    # the same logic on CPU (no GPU needed)
#
# What it checks, each a hard failure (non-zero exit) when wrong:
#   1. torch sees CUDA (device names, count, bf16 support printed);
#   2. the default model trains briefly on the built-in doodles with each precision
#      (fp32, bf16 where supported, fp16 with loss scaling) in both memory formats, and
#      with the automatic choice (bf16 or fp16, channels-last); each run must report the
#      precision, layout and device asked for, learn (test accuracy above chance), and
#      write a bundle that `imgclass evaluate` loads and scores identically;
#   3. a run with --time-limit 30s ends within 10% of it;
#   4. with 2 or more GPUs, a 2-process torchrun data-parallel run over NCCL, both
#      processes ending with the same weights (the run itself checks; metrics say nccl).
# It prints the training throughput (samples/s) of every configuration, and takes about
# 2-3 minutes on one GPU.
#
# --cpu-dry-run runs the same steps on CPU with smaller settings: bf16 and fp16 autocast
# and channels-last on CPU, and the torchrun run over gloo, so that the script's own
# logic is exercised where there is no GPU. Its numbers say nothing about a GPU.
#
# Options: --python PY (default: python), --keep (leave the work folder), --epochs N.
set -euo pipefail

PY=python
DRY=0
KEEP=0
EPOCHS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu-dry-run) DRY=1 ;;
        --python) PY="$2"; shift ;;
        --keep) KEEP=1 ;;
        --epochs) EPOCHS="$2"; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
cleanup() { if [[ $KEEP == 0 ]]; then rm -rf "$WORK"; else echo "work folder: $WORK"; fi; }
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
FAILED=0
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
START=$(date +%s)

fail() { echo "gpu_check: FAIL: $*" >&2; FAILED=1; }
step() { echo; echo "== $*"; }

# --- 1. the environment ---------------------------------------------------------------
step "environment"
"$PY" -c "import torch, imgclass; print('torch', torch.__version__, '| imgclass', imgclass.__file__)" \
    || { echo "gpu_check: FAIL: torch or imgclass cannot be imported (pip install torch; pip install -e .)" >&2; exit 1; }
if [[ $DRY == 1 ]]; then
    DEVICE=cpu; NGPU=0; BF16=1
    echo "CPU dry run: the GPU path's logic on CPU; throughput numbers are not a GPU's"
    EPOCHS=${EPOCHS:-1}
    EXTRA=(--set max_train_samples=320 --set num_threads=2)
else
    DEVICE=cuda
    "$PY" - <<'EOF' || { echo "gpu_check: FAIL: torch sees no CUDA device" >&2; exit 1; }
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(1)
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i} {torch.cuda.get_device_name(i)}")
print("bf16 supported:", torch.cuda.is_bf16_supported(), "| CUDA", torch.version.cuda)
EOF
    NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    BF16=$("$PY" -c "import torch; print(int(torch.cuda.is_bf16_supported()))")
    EPOCHS=${EPOCHS:-4}
    EXTRA=()
fi

step "data: the built-in doodles"
"$PY" -m imgclass -q data prepare --builtin doodles --out "$WORK/data" >/dev/null \
    || { echo "gpu_check: FAIL: preparing the built-in doodles" >&2; exit 1; }

# check_run JSON LABEL PRECISION LAYOUT: the run's own report against what was asked;
# appends "label precision layout samples/s accuracy seconds" to $RESULTS.
check_run() {
    "$PY" - "$@" "$DEVICE" "$RESULTS" "$DRY" <<'EOF'
import json, sys
path, label, precision, layout, device, results, dry = sys.argv[1:8]
m = json.loads(open(path).read().strip().splitlines()[-1])
problems = []
if not m.get("device", "").startswith(device):
    problems.append(f"trained on {m.get('device')}, not {device}")
if precision != "any" and m.get("precision") != precision:
    problems.append(f"precision {m.get('precision')}, asked {precision}")
if layout != "any" and bool(m.get("channels_last")) != (layout == "on"):
    problems.append(f"channels_last {m.get('channels_last')}, asked {layout}")
accuracy = (m.get("test") or {}).get("accuracy", 0.0)
if not accuracy > 0.1 and dry == "1":  # one epoch of 320 drawings: too little to tell
    print(f"{label}: warning: test accuracy {accuracy:.3f} (not checked in a dry run)")
elif not accuracy > 0.1:  # 20 classes: 0.05 by chance
    problems.append(f"test accuracy {accuracy:.3f}: not learning")
metrics = json.loads(open(path[: -len(".json")] + "/bundle/metrics.json").read())
rows = metrics.get("history") or [{}]
speed = rows[-1].get("samples_per_second", 0.0)  # the last epoch: warmed up
with open(results, "a") as out:
    out.write(f"{label}\t{m.get('precision')}\t{m.get('channels_last')}\t{speed:.0f}\t{accuracy:.4f}\t{m.get('total_seconds', 0):.1f}\n")
if problems:
    print(f"gpu_check: FAIL: {label}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"{label}: ok ({m.get('precision')}, channels_last {m.get('channels_last')}, {speed:.0f} samples/s, test accuracy {accuracy:.4f})")
EOF
}

# check_bundle RUNDIR JSON: imgclass evaluate loads the bundle and finds the same accuracy.
check_bundle() {
    local run=$1 json=$2
    "$PY" -m imgclass -q evaluate "$run/bundle" --data "$WORK/data" --json >"$run/evaluate.json" \
        || { fail "$run: imgclass evaluate could not use the bundle"; return; }
    "$PY" - "$json" "$run/evaluate.json" <<'EOF' || FAILED=1
import json, sys
trained = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["test"]["accuracy"]
evaluated = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
evaluated = evaluated.get("accuracy", (evaluated.get("metrics") or {}).get("accuracy"))
if evaluated is None or abs(trained - evaluated) > 1e-6:
    print(f"gpu_check: FAIL: the bundle scores {evaluated}, training reported {trained}", file=sys.stderr)
    sys.exit(1)
EOF
}

# --- 2. precisions and memory formats -------------------------------------------------
step "default model, $EPOCHS epoch(s) per configuration on $DEVICE"
CONFIGS=("fp32 off" "fp32 on" "fp16 on" "auto auto")
[[ $BF16 == 1 ]] && CONFIGS+=("bf16 off" "bf16 on")
for config in "${CONFIGS[@]}"; do
    read -r precision layout <<<"$config"
    label="$precision/$layout"
    run="$WORK/run-$precision-$layout"
    want_precision=$precision want_layout=$layout
    if [[ $precision == auto ]]; then
        if [[ $DRY == 1 ]]; then want_precision=fp32; want_layout=off
        elif [[ $BF16 == 1 ]]; then want_precision=bf16; want_layout=on
        else want_precision=fp16; want_layout=on; fi
    fi
    if "$PY" -m imgclass -q train --data "$WORK/data" --out "$run" --epochs "$EPOCHS" \
        --precision "$precision" --channels-last "$layout" --set device="$DEVICE" \
        "${EXTRA[@]}" --no-track --json >"$run.json" 2>"$run.log"; then
        check_run "$run.json" "$label" "$want_precision" "$want_layout" || FAILED=1
        check_bundle "$run" "$run.json"
    else
        fail "$label: training failed: $(tail -n 3 "$run.log")"
    fi
done

# --- 3. a time budget -----------------------------------------------------------------
step "time budget: --time-limit 30s"
run="$WORK/run-budget"
began=$(date +%s.%N)
if "$PY" -m imgclass -q train --data "$WORK/data" --out "$run" --time-limit 30s --epochs 1000 \
    --set device="$DEVICE" "${EXTRA[@]}" --no-track --json >"$run.json" 2>"$run.log"; then
    wall=$("$PY" -c "import time; print(f'{time.time() - $began:.1f}')")
    check_run "$run.json" "budget-30s" any any || FAILED=1
    "$PY" - "$run.json" "$wall" "$DRY" <<'EOF' || FAILED=1
import json, sys
m = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
wall, b, dry = float(sys.argv[2]), m["budget"], sys.argv[3] == "1"
print(f"30 s asked, {wall:.1f} s taken: {b['epochs_done']} of {b['epochs_cap']} epochs, {b['samples_per_second']:.0f} samples/s")
if wall > 33 and dry:  # a shared CPU's timing says nothing about the GPU path
    print(f"gpu_check: warning: --time-limit 30s took {wall:.1f} s (not checked in a dry run)")
elif wall > 33:
    print(f"gpu_check: FAIL: --time-limit 30s took {wall:.1f} s (more than 10% over)", file=sys.stderr)
    sys.exit(1)
EOF
else
    fail "budget run failed: $(tail -n 3 "$run.log")"
fi

# --- 4. data parallel -----------------------------------------------------------------
if [[ $DRY == 1 || $NGPU -ge 2 ]]; then
    backend=$([[ $DRY == 1 ]] && echo gloo || echo nccl)
    step "torchrun: 2 processes, $backend"
    run="$WORK/run-ddp"
    port=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    if "$PY" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$port" \
        -m imgclass -q train --data "$WORK/data" --out "$run" --epochs "$EPOCHS" \
        --set device="$DEVICE" "${EXTRA[@]}" --no-track --json >"$run.json" 2>"$run.log"; then
        check_run "$run.json" "ddp-2" any any || FAILED=1
        "$PY" - "$run.json" "$backend" <<'EOF' || FAILED=1
import json, sys
m = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
d = m.get("distributed") or {}
if m.get("world_size") != 2 or d.get("backend") != sys.argv[2]:
    print(f"gpu_check: FAIL: torchrun: world {m.get('world_size')}, backend {d.get('backend')}", file=sys.stderr)
    sys.exit(1)
print(f"ddp: 2 processes over {d['backend']}, samples per process {d['samples_per_process']}, same weights")
EOF
        check_bundle "$run" "$run.json"
    else
        fail "torchrun failed: $(tail -n 5 "$run.log")"
    fi
else
    step "torchrun: skipped (one GPU)"
fi

# --- the throughput table -------------------------------------------------------------
step "throughput on $DEVICE (last epoch, samples/s)"
printf "%-12s %-9s %-13s %10s %9s %9s\n" config precision channels_last samples/s test_acc seconds
while IFS=$'\t' read -r label precision layout speed accuracy seconds; do
    printf "%-12s %-9s %-13s %10s %9s %9s\n" "$label" "$precision" "$layout" "$speed" "$accuracy" "$seconds"
done <"$RESULTS"
echo "total: $(( $(date +%s) - START )) s"
if [[ $FAILED != 0 ]]; then
    echo "gpu_check: SOME CHECKS FAILED" >&2
    exit 1
fi
echo "gpu_check: all checks passed"
