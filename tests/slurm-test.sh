#!/usr/bin/env bash
# `make slurm-test`: the tiny pipeline through a real Slurm on this machine (scripts/slurm-local.sh
# starts one when none runs, installing it as root when missing, and stops it again at the end).
#   1. `make -j4 all LAUNCH="srun -N1 -n1 -c1"`: Slurm's own job records (jobcomp.txt) show every
#      heavy recipe as a job of its own, named after its target, COMPLETED with exit code 0, and at
#      least two jobs running at the same time; the outputs are byte-identical to a run without
#      Slurm;
#   2. one training job cancelled while it runs (scancel: SIGTERM, then SIGKILL after KillWait):
#      it stops at its step and keeps a resume point; make stops; the rerun gives the same bytes;
#   3. a failing job (a truncated checkpoint): make stops and names the target, Slurm records
#      FAILED with the exit code, and nothing half-written is left.
# Every run writes to the same DATA path (tables record their input paths), moved aside in between.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

LAUNCH="srun -N1 -n1 -c1"
# 6,000 steps: each training job runs a few seconds, long enough to overlap with the other in
# Slurm's whole-second records and to be cancelled in the middle (the tiny pipeline's 40 steps
# take a fraction of a second; since the fast path, 1,500 steps took under a second on a quiet
# machine, and a CI run once saw no two jobs overlap).
STEPS=6000
WORK="$(mktemp -d /tmp/slurm-test.XXXXXX)"
DATA="$WORK/data"
EXP="$DATA/tiny-p11"
MAKE_ARGS=(PIPELINE=pipelines/tiny.yaml "DATA=$DATA" "STEPS=$STEPS" RELEASED_DIR=)

say() { echo "slurm-test: $*"; }
fail() { echo "slurm-test: FAIL: $*" >&2; echo "slurm-test: outputs and logs kept in $WORK" >&2; exit 1; }

started_slurm=
eval "$(scripts/slurm-local.sh env)"
JOBCOMP="$(dirname "$SLURM_CONF")/jobcomp.txt"
status="$(scripts/slurm-local.sh status 2>/dev/null || true)"
if ! grep -q '^slurmd: running' <<<"$status"; then
    scripts/slurm-local.sh start || fail "could not start the local Slurm"
    started_slurm=1
fi
finish() {
    if [ -n "$started_slurm" ]; then scripts/slurm-local.sh stop || true; fi
}
trap finish EXIT
touch "$JOBCOMP"

# The job records appended since line $1 of jobcomp.txt, as "name state exit start end" with the
# times in seconds since the epoch.
records_since() {
    tail -n +"$(( $1 + 1 ))" "$JOBCOMP" | while read -r line; do
        local name state exit start end
        name=$(grep -o 'Name=[^ ]*' <<<"$line" | head -1 | cut -d= -f2)
        state=$(grep -o 'JobState=[^ ]*' <<<"$line" | cut -d= -f2)
        exit=$(grep -o ' ExitCode=[^ ]*' <<<"$line" | cut -d= -f2)
        start=$(date -d "$(grep -o 'StartTime=[^ ]*' <<<"$line" | cut -d= -f2)" +%s)
        end=$(date -d "$(grep -o 'EndTime=[^ ]*' <<<"$line" | cut -d= -f2)" +%s)
        echo "$name $state $exit $start $end"
    done
}
lines() { wc -l < "$JOBCOMP"; }
same_bytes() { diff -r -q "$WORK/local" "$EXP" >"$WORK/diff.txt" 2>&1 || fail "$1: outputs differ from the run without Slurm: $(head -5 "$WORK/diff.txt")"; }

# --- 0. the reference: the same pipeline without Slurm ------------------------------------------
say "reference run without Slurm (make -j2 all, STEPS=$STEPS)"
make -j2 all "${MAKE_ARGS[@]}" >"$WORK/local.log" 2>&1 || { tail -30 "$WORK/local.log"; fail "make without Slurm failed"; }
mv "$EXP" "$WORK/local"

# --- 1. through Slurm: job records, overlap, same bytes -----------------------------------------
say "make -j4 all LAUNCH=\"$LAUNCH\""
n0=$(lines)
t0=$(date +%s)
make -j4 all "${MAKE_ARGS[@]}" LAUNCH="$LAUNCH" >"$WORK/slurm.log" 2>&1 || { tail -30 "$WORK/slurm.log"; fail "make through Slurm failed"; }
say "  took $(( $(date +%s) - t0 )) s"
records_since "$n0" > "$WORK/records.txt"
expected="tiny-p11/gen-data"
for run in alpha0 alpha1; do
    for stage in train scan symmetry llc; do expected="$expected tiny-p11/$stage/$run"; done
done
for name in $expected; do
    n=$(awk -v n="$name" '$1 == n' "$WORK/records.txt" | wc -l)
    [ "$n" -eq 1 ] || fail "job $name appears $n times in Slurm's records (expected once): $(cat "$WORK/records.txt")"
    read -r _ state exit _ _ < <(awk -v n="$name" '$1 == n' "$WORK/records.txt") || true
    [ "$state" = COMPLETED ] && [ "$exit" = 0:0 ] || fail "job $name: Slurm recorded $state, exit code $exit"
done
[ "$(wc -l < "$WORK/records.txt")" -eq "$(wc -w <<<"$expected")" ] || fail "unexpected jobs in the records: $(cat "$WORK/records.txt")"
say "  Slurm recorded all $(wc -w <<<"$expected") heavy recipes as jobs, each COMPLETED with exit code 0:0"
# Two jobs overlap when each started before the other ended (whole seconds: strictly).
overlap=$(awk '{n[NR]=$1; s[NR]=$4; e[NR]=$5}
    END {for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) if (s[i] < e[j] && s[j] < e[i]) {print n[i] " [" s[i] "," e[i] "] and " n[j] " [" s[j] "," e[j] "]"; exit}}' "$WORK/records.txt")
[ -n "$overlap" ] || fail "no two jobs ran at the same time: $(cat "$WORK/records.txt")"
say "  ran at the same time: $overlap"
same_bytes "through Slurm"
say "  outputs byte-identical to the run without Slurm"
rm -rf "$DATA"

# --- 2. scancel of a running training job, then the rerun ---------------------------------------
say "cancelling the training job of alpha1 while it runs"
n0=$(lines)
make -j4 all "${MAKE_ARGS[@]}" LAUNCH="$LAUNCH" >"$WORK/cancel.log" 2>&1 &
make_pid=$!
job=
for _ in $(seq 1 600); do
    job=$(squeue -h -t R -n tiny-p11/train/alpha1 -o %i 2>/dev/null | head -1)
    # Some checkpoints written, the run not finished: it is in the middle.
    if [ -n "$job" ] && [ "$(ls "$EXP/runs/alpha1/checkpoints" 2>/dev/null | wc -l)" -ge 10 ]; then break; fi
    job=
    sleep 0.05
done
[ -n "$job" ] || { kill "$make_pid" 2>/dev/null || true; fail "never saw the training job of alpha1 running with checkpoints"; }
scancel "$job"
cancelled_at=$(date +%s)
rc=0; wait "$make_pid" || rc=$?
[ "$rc" -ne 0 ] || fail "make succeeded although its training job was cancelled"
grep -q "metrics.parquet.*Error\|Error.*alpha1/metrics.parquet\|alpha1/metrics.parquet\] Error" "$WORK/cancel.log" || fail "make's output does not name the cancelled target: $(tail -5 "$WORK/cancel.log")"
grep -q "stopped at step" "$WORK/cancel.log" || fail "the cancelled train did not stop at a step (killed?): $(tail -10 "$WORK/cancel.log")"
say "  what the user sees:"
grep -E "CANCELLED|stop requested|stopped at step|Error" "$WORK/cancel.log" | sed 's/^/    | /'
read -r _ state _ _ end < <(records_since "$n0" | awk '$1 == "tiny-p11/train/alpha1"') || true
[ "$state" = CANCELLED ] || fail "Slurm recorded the cancelled job as $state"
(( end - cancelled_at <= 10 )) || fail "the cancelled job took $(( end - cancelled_at )) s to end (KillWait is 30 s)"
[ ! -e "$EXP/runs/alpha1/metrics.parquet" ] || fail "the cancelled run has a metrics.parquet"
extra=$(comm -13 <(ls "$WORK/local/runs/alpha1/checkpoints" | grep -v optim) <(ls "$EXP/runs/alpha1/checkpoints" | grep -v optim))
[ -z "$extra" ] || fail "checkpoints off the schedule after the cancel: $extra"
say "  Slurm recorded CANCELLED; the job ended within $(( end - cancelled_at )) s of scancel; checkpoints/ holds only scheduled steps"
say "  rerunning make"
make -j4 all "${MAKE_ARGS[@]}" LAUNCH="$LAUNCH" >"$WORK/rerun.log" 2>&1 || { tail -30 "$WORK/rerun.log"; fail "the rerun after scancel failed"; }
grep -o "resuming from [^ ]*" "$WORK/rerun.log" | sed 's/^/    | /' || true
same_bytes "after scancel and rerun"
say "  outputs byte-identical to the run without Slurm"

# --- 3. a failing job ---------------------------------------------------------------------------
say "a failing job: alpha0's first checkpoint truncated, its LLC table removed, make -j4 llc"
broken="$EXP/runs/alpha0/checkpoints/step_0000000.safetensors"
truncate -s 100 "$broken"
rm -f "$EXP/runs/alpha0/llc.parquet" "$EXP/runs/alpha0/llc_trace.parquet"
n0=$(lines)
rc=0; make -j4 llc "${MAKE_ARGS[@]}" LAUNCH="$LAUNCH" >"$WORK/fail.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "make succeeded on a truncated checkpoint"
say "  what the user sees:"
grep -E "error|Error" "$WORK/fail.log" | sed 's/^/    | /'
grep -q "alpha0/llc.parquet\] Error" "$WORK/fail.log" || fail "make's output does not name the failed target"
grep -q "step_0000000.safetensors" "$WORK/fail.log" || fail "the error does not name the broken file"
read -r _ state exit _ _ < <(records_since "$n0" | awk '$1 == "tiny-p11/llc/alpha0"') || true
[ "$state" = FAILED ] && [ "$exit" = 1:0 ] || fail "Slurm recorded the failing job as $state, exit code $exit"
left=$(find "$EXP/runs/alpha0" -name 'llc*.parquet' -o -name '.*.tmp-*' -o -name '.*.lock')
[ -z "$left" ] || fail "left behind by the failing job: $left"
say "  Slurm recorded FAILED, exit code $exit; no llc table, partial table, temporary or lock file left"

rm -rf "$WORK"
say "passed in $(( $(date +%s) - started )) s"
