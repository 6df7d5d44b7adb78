#!/usr/bin/env bash
# End to end: lit's mnist example (target/release/mnist fit: train, validate every epoch, test,
# save and reload a checkpoint; real data, a loader worker, progress bar, CSV logger,
# ModelCheckpoint) against the same job written by hand in tch (target/release/mnist_tch, the
# limit) and in PyTorch Lightning (bench/mnist_lightning.py), then lit's example with 0, 1 and 2
# loader workers.
#
#   scripts/with-torch cargo build --release -p lit-examples --bin mnist
#   scripts/with-torch cargo build --release -p lit-bench --bin mnist_tch
#   scripts/with-torch bench/end_to_end.sh [ROUNDS]
#
# ROUNDS (default 3) alternating runs of each variant, each in a fresh temporary directory (its
# logs, checkpoints and $TMPDIR), under /usr/bin/time -v (or Python's resource module without it)
# for wall time, user and system CPU time and peak RSS. Environment: THREADS (OMP_NUM_THREADS of
# both sides, default 2), EPOCHS (default 3), WORKERS (num_workers of the first table, default 1),
# MAX_OTHERS and RETRIES (see `run` below), KEEP=1 keeps the run directories. The tables show
# medians; spread is min–max over the rounds; "others" is the most CPU time that other processes
# used during one kept run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${LIT_TORCH_PYTHON:-}" ]; then
  exec "$ROOT/scripts/with-torch" "$0" "$@"
fi

ROUNDS=${1:-3}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-3}
WORKERS=${WORKERS:-1}
PY="$LIT_TORCH_PYTHON"
DATA="$ROOT/data/mnist"

for bin in mnist:lit-examples mnist_tch:lit-bench; do
  [ -x "$ROOT/target/release/${bin%%:*}" ] || {
    echo "end_to_end: $ROOT/target/release/${bin%%:*} is missing" >&2
    echo "  to fix: scripts/with-torch cargo build --release -p ${bin#*:} --bin ${bin%%:*}" >&2
    exit 1
  }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lit-e2e.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
# Copies of the binaries, so that a rebuild during the benchmark does not change what is timed.
cp "$ROOT/target/release/mnist" "$ROOT/target/release/mnist_tch" "$WORK/"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
: >"$WORK/discarded"

export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
export RUST_LOG=${RUST_LOG:-lit=info}
export PYTHONUNBUFFERED=1

# timed OUT_PREFIX CMD...: runs CMD, writes OUT_PREFIX.{out,err,time}; .time holds
# "wall user sys maxrss_kib" from /usr/bin/time -v, or from os.wait4 without it.
timed() {
  local prefix=$1
  shift
  local rc=0
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$prefix.timev" "$@" >"$prefix.out" 2>"$prefix.err" || rc=$?
    "$PY" - "$prefix.timev" >"$prefix.time" <<'PY'
import sys
f = {}
for line in open(sys.argv[1]):
    k, _, v = line.strip().rpartition(": ")
    f[k] = v
wall = 0.0
for part in f["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":"):
    wall = wall * 60 + float(part)
print(wall, f["User time (seconds)"], f["System time (seconds)"], f["Maximum resident set size (kbytes)"])
PY
  else
    "$PY" - "$prefix" "$@" <<'PY' || rc=$?
import os, subprocess, sys, time
prefix, cmd = sys.argv[1], sys.argv[2:]
with open(prefix + ".out", "wb") as out, open(prefix + ".err", "wb") as err:
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=out, stderr=err)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
with open(prefix + ".time", "w") as f:
    print(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, file=f)
sys.exit(os.waitstatus_to_exitcode(status))
PY
  fi
  if [ "$rc" != 0 ]; then
    echo "end_to_end: $* failed (exit $rc); the end of its stderr:" >&2
    tail -n 20 "$prefix.err" >&2
    exit 1
  fi
}

# CPU time the whole machine has spent busy (user, nice, system, irq, softirq, steal), in ticks.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
HZ=$(getconf CLK_TCK)

# Waits (at most 10 minutes) until other processes leave the machine idle: under 0.1 CPU s in 2 s.
wait_quiet() {
  local a b
  for _ in $(seq 300); do
    a=$(busy_ticks)
    sleep 2
    b=$(busy_ticks)
    [ $((b - a)) -le $((HZ / 10)) ] && return 0
  done
  echo "end_to_end: the machine stayed busy; running anyway" >&2
}

# run TABLE VARIANT ROUND WORKERS: one timed run in a fresh directory, appended to $RESULTS. A run
# during which other processes used more than MAX_OTHERS (default 0.05) CPU seconds per second of
# its wall time is discarded and repeated (at most RETRIES times, default 5), after waiting for
# the machine to be idle: on 2 cores with OMP_NUM_THREADS=2, one busy neighbour slows libtorch's
# parallel regions many times over.
run() {
  local table=$1 variant=$2 round=$3 workers=$4
  local dir="$WORK/$table-$variant-$round"
  local attempt before others acc wall user sys rss
  for attempt in $(seq 0 "${RETRIES:-5}"); do
    rm -rf "$dir"
    mkdir -p "$dir/tmp"
    wait_quiet
    before=$(busy_ticks)
    case $variant in
      lit*)
        (cd "$dir" && export TMPDIR="$dir/tmp" && timed "$dir/run" "$WORK/mnist" fit --data.dir "$DATA" \
          --data.num_workers "$workers" --trainer.max_epochs "$EPOCHS" --trainer.default_root_dir "$dir")
        ;;
      tch)
        (cd "$dir" && export TMPDIR="$dir/tmp" && timed "$dir/run" "$WORK/mnist_tch" --data_dir "$DATA" \
          --max_epochs "$EPOCHS" --root "$dir")
        ;;
      lightning)
        (cd "$dir" && export TMPDIR="$dir/tmp" && timed "$dir/run" "$PY" "$ROOT/bench/mnist_lightning.py" \
          --data_dir "$DATA" --num_workers "$workers" --max_epochs "$EPOCHS" --root "$dir")
        ;;
    esac
    others=$(($(busy_ticks) - before))
    acc=$(sed -n 's/^test accuracy: \([0-9.]*\)%$/\1/p' "$dir/run.out" | tail -n 1)
    read -r wall user sys rss <"$dir/run.time"
    # CPU time of other processes during the run: the machine's busy time less the run's own.
    others=$("$PY" -c "print(f'{max(0.0, $others / $HZ - $user - $sys):.1f}')")
    printf '%-10s round %s: wall %6.1f s  user %6.1f s  sys %5.1f s  peak RSS %6.0f MiB  test acc %s%%  others %s CPU s' \
      "$variant" "$round" "$wall" "$user" "$sys" "$((rss / 1024))" "${acc:-?}" "$others" >&2
    if "$PY" -c "import sys; sys.exit(0 if $others <= ${MAX_OTHERS:-0.05} * $wall else 1)"; then
      echo >&2
      break
    fi
    if [ "$attempt" -lt "${RETRIES:-5}" ]; then
      echo "  (discarded: other processes were busy)" >&2
      echo "$table $variant" >>"$WORK/discarded"
    else
      echo "  (kept: still busy after ${RETRIES:-5} retries)" >&2
    fi
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$table" "$variant" "$round" "$wall" "$user" "$sys" "$rss" "${acc:-nan}" "$others" >>"$RESULTS"
}

echo "end_to_end: $ROUNDS rounds, $EPOCHS epochs, OMP_NUM_THREADS=$THREADS, $(nproc) cores; binary $(sha256sum "$WORK/mnist" | cut -c1-12), Lightning $("$PY" -c 'import lightning; print(lightning.__version__)'), torch $("$PY" -c 'import torch; print(torch.__version__)')" >&2

for round in $(seq 1 "$ROUNDS"); do
  # A different first variant each round, so that none always runs first.
  for k in 0 1 2; do
    case $(((round - 1 + k) % 3)) in
      0) run e2e lit "$round" "$WORKERS" ;;
      1) run e2e tch "$round" "$WORKERS" ;;
      2) run e2e lightning "$round" "$WORKERS" ;;
    esac
  done
done
for round in $(seq 1 "$ROUNDS"); do
  # A different first variant each round, so that none always runs first.
  for k in 0 1 2; do
    w=$(((round - 1 + k) % 3))
    run workers "lit-w$w" "$round" "$w"
  done
done

"$PY" - "$RESULTS" "$WORKERS" "$THREADS" "$EPOCHS" <<'PY'
import statistics as st, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
workers, threads, epochs = sys.argv[2:5]
def runs(table, variant):
    return [dict(wall=float(w), user=float(u), sys=float(s), rss=float(r) / 1024, acc=a, others=float(o))
            for t, v, _, w, u, s, r, a, o in rows if (t, v) == (table, variant)]
def med(rs, key):
    return st.median(r[key] for r in rs)
def spread(rs):
    return f"{min(r['wall'] for r in rs):.1f}–{max(r['wall'] for r in rs):.1f}"
def accs(rs):
    return "/".join(sorted({r["acc"] for r in rs}))
def others(rs):
    return max(r["others"] for r in rs)
print(f"\nmnist fit, {epochs} epochs, num_workers {workers}, OMP_NUM_THREADS={threads}; {len(runs('e2e', 'lit'))} rounds "
      f"(medians; spread min–max; others: most CPU s used by other processes during one run)")
print(f"{'variant':<10} {'wall s':>7} {'spread s':>12} {'user s':>7} {'sys s':>6} {'peak RSS MiB':>12} {'test acc %':>10} {'others':>6}")
m = {}
for v in ("lit", "tch", "lightning"):
    rs = runs("e2e", v)
    m[v] = (med(rs, "wall"), med(rs, "rss"))
    print(f"{v:<10} {m[v][0]:>7.1f} {spread(rs):>12} {med(rs, 'user'):>7.1f} {med(rs, 'sys'):>6.1f} {m[v][1]:>12.0f} "
          f"{accs(rs):>10} {others(rs):>6.1f}")
print(f"lit/tch (hand-written): wall {m['lit'][0] / m['tch'][0]:.3f}, peak RSS {m['lit'][1] / m['tch'][1]:.3f}")
print(f"lit/Lightning: wall {m['lit'][0] / m['lightning'][0]:.3f}, peak RSS {m['lit'][1] / m['lightning'][1]:.3f}")
print(f"\nlit's mnist fit by data.num_workers; {len(runs('workers', 'lit-w0'))} rounds")
print(f"{'workers':<10} {'wall s':>7} {'spread s':>12} {'user s':>7} {'sys s':>6} {'peak RSS MiB':>12} {'test acc %':>10} {'others':>6}")
for w in (0, 1, 2):
    rs = runs("workers", f"lit-w{w}")
    print(f"{w:<10} {med(rs, 'wall'):>7.1f} {spread(rs):>12} {med(rs, 'user'):>7.1f} {med(rs, 'sys'):>6.1f} "
          f"{med(rs, 'rss'):>12.0f} {accs(rs):>10} {others(rs):>6.1f}")
PY
echo "runs discarded because other processes were busy: $(wc -l <"$WORK/discarded")$(sort "$WORK/discarded" | uniq -c | awk '{printf " (%s %s: %s)", $2, $3, $1}' | sed 's/) (/, /g')"
[ "${KEEP:-0}" = 1 ] && echo "end_to_end: runs kept in $WORK" >&2
exit 0
