#!/usr/bin/env bash
# The GPU checks (issue 36 item 7), in at most ~8 minutes on a machine with one NVIDIA GPU and
# ~16 cores, no network, the repository's .venv in place:
#
#   a  pytest -m gpu                       the tests marked `gpu` (pyproject.toml; skipped without CUDA)
#   b  PPO CartPole-v1, 2048 env copies    time to solve (--stop-at-return 475) with --device cuda,
#                                          then the same run with --device cpu, and the ratio
#   c  PPO CarRacing-v3, learner on cuda   2 Ray rollout workers (--backend ray --workers 2), a small
#                                          step budget: env steps/s
#   d  LunarLander-v3 env throughput       SyncVectorEnv vs AsyncVectorEnv (async_envs) at 8 and 16
#                                          copies (bench/env_throughput.py --processes)
#
# Each step has its own timeout, cut further so that the whole stays under TOTAL_S; a step that
# fails or times out says so in its row and the script goes on. One table at the end:
# row, device, wall s, result. Run directories go to a temporary folder (printed), removed unless --keep.
#
#   bench/gpu.sh             # the real thing; without CUDA the cuda rows fail at once ("failed")
#   bench/gpu.sh --dry-run   # the same commands on cpu with tiny budgets: checks the plumbing in ~2 min
#
# Exit status: 0 when every row passed, 1 when any row failed.
set -u
cd "$(dirname "$0")/.." || exit 1

PY=.venv/bin/python
DRY=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument '$arg' (accepted: --dry-run, --keep)" >&2; exit 2 ;;
    esac
done
[ -x "$PY" ] || { echo "bench/gpu.sh: no $PY (run from a checkout with its .venv)" >&2; exit 2; }

OUT=$(mktemp -d /tmp/rlkit-gpu.XXXXXX)
[ "$KEEP" = 1 ] || trap 'rm -rf "$OUT"' EXIT
TOTAL_S=470          # the whole script's budget (each step's timeout is cut to what is left)
KILL_AFTER=10        # SIGTERM first (rlkit commits and stops at its next update), SIGKILL this much later
START=$(date +%s)

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    GPU=cuda
    "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB')"
else
    GPU=none
    echo "no CUDA device on this machine: the cuda rows will fail (soft)"
fi
echo "cores: $(nproc), run directories under $OUT"
if [ "$DRY" = 1 ]; then
    DEV=cpu   # the "cuda" rows run on cpu with tiny budgets: the plumbing, not the figures
    echo "dry run: cuda rows run on cpu with tiny budgets"
else
    DEV=cuda
fi

ROWS=()
FAILED=0

# step_timeout WANTED -> the timeout to use: WANTED, or what is left of TOTAL_S (at least 5 s)
step_timeout() {
    local left=$(( TOTAL_S - ($(date +%s) - START) - KILL_AFTER ))
    local t=$1
    [ "$left" -lt "$t" ] && t=$left
    [ "$t" -lt 5 ] && t=5
    echo "$t"
}

# row NAME DEVICE WALL RESULT
row() {
    ROWS+=("$1|$2|$3|$4")
    printf '  -> %s [%s] %ss: %s\n' "$1" "$2" "$3" "$4"
}

# run NAME TIMEOUT LOG CMD...: runs CMD under timeout, output to LOG; sets RC and WALL
run() {
    local name=$1 t=$2 log=$3
    shift 3
    echo "== $name (timeout ${t}s): $*"
    local t0 t1
    t0=$(date +%s.%N)
    timeout -k "$KILL_AFTER" "$t" "$@" >"$log" 2>&1
    RC=$?
    t1=$(date +%s.%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

# why RC LOG T: a one-line reason for a failed step
why() {
    case "$1" in
        124|137) echo "failed: timed out after $3 s" ;;
        *) echo "failed (exit $1): $(grep -v '^\s*$' "$2" | tail -n 1 | cut -c1-150)" ;;
    esac
}

# summary RUN_DIR: the run's outcome from its run.json (solved at / steps and wall / steps per second)
summary() {
    "$PY" - "$1/run.json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("no run.json")
    raise SystemExit(0)
steps, wall = r.get("steps", 0), r.get("wall_s") or 0.0
rate = f", {steps / wall:,.0f} env steps/s" if wall else ""
if r.get("solved_at_s") is not None:
    print(f"solved at {r['solved_at_step']:,} steps in {r['solved_at_s']:.1f} s{rate}")
else:
    best = (r.get("best") or {}).get("mean_return")
    print(f"{r.get('status', '?')}: {steps:,} steps in {wall:.1f} s{rate}" + (f", best eval {best:.1f}" if best is not None else ""))
EOF
}

# solved_s RUN_DIR: seconds to solve, or nothing
solved_s() {
    "$PY" -c "import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    raise SystemExit(0)
if r.get('solved_at_s') is not None: print(r['solved_at_s'])" "$1/run.json"
}

# --- a: the GPU tests ------------------------------------------------------------------------
T=$(step_timeout 75)
run "a pytest -m gpu" "$T" "$OUT/a.log" "$PY" -m pytest -m gpu -q -p no:cacheprovider
RESULT=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$OUT/a.log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
if [ "$RC" = 0 ]; then
    [ "$GPU" = none ] && RESULT="$RESULT (no CUDA: skipped)"
    row "a pytest -m gpu" "$GPU" "$WALL" "${RESULT:-passed}"
else
    row "a pytest -m gpu" "$GPU" "$WALL" "$(why "$RC" "$OUT/a.log" "$T")${RESULT:+; $RESULT}"
    FAILED=1
fi

# --- b: PPO CartPole-v1 with thousands of copies, cuda then cpu ------------------------------
# The CartPole-v1 entry (n_epochs 20, lr 2.5e-3, gamma 0.98, gae_lambda 0.8) with 2048 copies of
# 16 steps: 32,768 steps per update in 8 minibatches of 4096. The same settings on both devices.
if [ "$DRY" = 1 ]; then
    CP_SET=(n_envs=64 n_steps=16 batch_size=256 n_epochs=2); CP_STEPS=4096; CP_EVAL=2048; CP_T=40
else
    CP_SET=(n_envs=2048 n_steps=16 batch_size=4096); CP_STEPS=3000000; CP_EVAL=32768; CP_T=110
fi
declare -A SOLVE
for dev in "$DEV" cpu; do
    name="b ppo CartPole-v1 ${CP_SET[0]#n_envs=} copies"
    dir="$OUT/cartpole-$dev"
    if [ "$dev" = cpu ] && [ "$DEV" = cuda ] && [ "$GPU" = none ]; then
        row "$name" "$dev" "-" "skipped: no cuda run to compare with"
        break
    fi
    T=$(step_timeout "$CP_T")
    run "$name [$dev]" "$T" "$OUT/b-$dev.log" "$PY" cli.py train --algo ppo --env CartPole-v1 --device "$dev" \
        --set "${CP_SET[@]}" --steps "$CP_STEPS" --stop-at-return 475 --eval-every "$CP_EVAL" --eval-episodes 10 \
        --final-eval-episodes 0 --seed 0 --no-progress --quiet --run-dir "$dir"
    if [ "$RC" = 0 ]; then
        row "$name" "$dev" "$WALL" "$(summary "$dir")"
        SOLVE[$dev]=$(solved_s "$dir")
    else
        extra=""
        [ -f "$dir/run.json" ] && extra="; $(summary "$dir")"
        row "$name" "$dev" "$WALL" "$(why "$RC" "$OUT/b-$dev.log" "$T")$extra"
        FAILED=1
    fi
    [ "$DEV" = cpu ] && break  # dry run: cpu twice would say nothing new
done
if [ "$DEV" = cuda ]; then
    if [ -n "${SOLVE[cuda]:-}" ] && [ -n "${SOLVE[cpu]:-}" ]; then
        row "b time to solve, cpu / cuda" "-" "-" "$(awk -v c="${SOLVE[cpu]}" -v g="${SOLVE[cuda]}" 'BEGIN { printf "%.2fx (cpu %.1f s, cuda %.1f s)", c / g, c, g }')"
    else
        row "b time to solve, cpu / cuda" "-" "-" "no ratio: a run did not solve"
    fi
fi

# --- c: PPO CarRacing-v3, learner on cuda, 2 Ray rollout workers -----------------------------
# rlkit's default PPO entry (no CarRacing one): 8 copies, 4 per worker; a CNN on the 96x96 frames.
# No evaluation inside the budget; the row's figure is run.json's steps / wall time, which includes
# Ray's start and the one-episode evaluation every run ends with.
if [ "$DRY" = 1 ]; then
    CR_SET=(n_envs=4 n_steps=32 n_epochs=1 batch_size=64 cnn=compact); CR_STEPS=256; CR_T=120
else
    CR_SET=(n_envs=8 n_steps=256 n_epochs=2 batch_size=256); CR_STEPS=32768; CR_T=140
fi
T=$(step_timeout "$CR_T")
dir="$OUT/carracing"
run "c ppo CarRacing-v3 ray x2" "$T" "$OUT/c.log" "$PY" cli.py train --algo ppo --env CarRacing-v3 --device "$DEV" \
    --backend ray --workers 2 --set "${CR_SET[@]}" --steps "$CR_STEPS" --eval-every 100000000 --eval-episodes 1 \
    --final-eval-episodes 0 --seed 0 --no-progress --quiet --run-dir "$dir"
if [ "$RC" = 0 ]; then
    row "c ppo CarRacing-v3 ray x2" "$DEV learner" "$WALL" "$(summary "$dir")"
else
    extra=""
    [ -f "$dir/run.json" ] && extra="; $(summary "$dir")"
    row "c ppo CarRacing-v3 ray x2" "$DEV learner" "$WALL" "$(why "$RC" "$OUT/c.log" "$T")$extra"
    FAILED=1
fi

# --- d: LunarLander-v3, SyncVectorEnv vs AsyncVectorEnv (async_envs) -------------------------
if [ "$DRY" = 1 ]; then D_ARGS=(--copies 2 --seconds 1); else D_ARGS=(--copies 8 16 --seconds 3); fi
T=$(step_timeout 40)
run "d LunarLander-v3 sync vs async" "$T" "$OUT/d.log" "$PY" bench/env_throughput.py --processes "${D_ARGS[@]}"
if [ "$RC" = 0 ]; then
    RESULT=$(awk '$1 == "LunarLander-v3" { printf "%s%s copies: sync %s, async %s steps/s (%s)", sep, $2, $3, $4, $5; sep = "; " }' "$OUT/d.log")
    row "d LunarLander-v3 sync vs async" "cpu x$(nproc)" "$WALL" "$RESULT"
else
    row "d LunarLander-v3 sync vs async" "cpu x$(nproc)" "$WALL" "$(why "$RC" "$OUT/d.log" "$T")"
    FAILED=1
fi

# --- the table ---------------------------------------------------------------------------------
echo
echo "bench/gpu.sh: $(( $(date +%s) - START )) s in all$([ "$DRY" = 1 ] && echo ', dry run (cpu, tiny budgets)')"
printf '%-34s %-12s %8s  %s\n' "row" "device" "wall s" "result"
printf '%-34s %-12s %8s  %s\n' "---" "------" "------" "------"
for r in "${ROWS[@]}"; do
    IFS='|' read -r name dev wall result <<<"$r"
    printf '%-34s %-12s %8s  %s\n' "$name" "$dev" "$wall" "$result"
done
[ "$KEEP" = 1 ] && echo "logs and run directories kept in $OUT"
exit "$FAILED"
