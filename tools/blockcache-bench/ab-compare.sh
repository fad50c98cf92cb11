#!/usr/bin/env bash
# A/B comparison of two builds of the blockcache crate under the same
# blockcache-bench tool: BEFORE (a git revision: the crate there must build
# under the current tool, so it has the `config` constants the tool
# imports) against AFTER (default: the current working tree, uncommitted
# changes included; or a second revision).
#
# Both sides are built from copies under /var/tmp with the *current* tool
# source (tools/blockcache-bench and benches/suite.rs of the working tree)
# and the current Cargo.lock, so only the cache differs; each side has its
# own CARGO_TARGET_DIR (kept between runs for speed, see AB_DIR). If the
# BEFORE crate has no `Config::fast_hits` or `Config::readahead`, its copy
# of the tool's rig.rs loses that call (each patch must apply exactly once).
#
# The two binaries then run alternately, round by round, each run a whole
# `--rounds 1` invocation of one workload: odd rounds BEFORE then AFTER,
# even rounds AFTER then BEFORE, so drift and machine noise hit both alike.
# Every benchmark run holds /tmp/blockcache-bench.lock (flock), so it never
# overlaps another benchmark on this machine. The table printed at the end
# gives, per case (workload, threads, row), the median over rounds of the
# per-round after/before ratios of ops/s and of p99 latency. Baseline rows
# (pread, direct, raw io_uring) are the same code on both sides: their
# ratios should be ~1.00 and show how noisy the run was.
#
# Usage:
#   tools/blockcache-bench/ab-compare.sh [-n ROUNDS] [-w WORKLOADS] [-s SECONDS]
#       BEFORE_REV [AFTER_REV] [-- EXTRA BENCH ARGS]
#     -n ROUNDS     rounds per side (default 5)
#     -w WORKLOADS  comma list of blockcache-bench workloads (default mixed,random)
#     -s SECONDS    --seconds per run (default 1)
#     EXTRA         passed to every run, e.g. -- --cache 32MiB --threads 1,2
#                   (not --workload/--rounds/--json/--idle-seconds/--seconds)
#   Environment: AB_DIR (default /var/tmp/blockcache-ab): work dir, holding
#   the target dirs and, during a run, the source copies and raw results;
#   AB_KEEP=1 keeps the sources and the per-run JSON/text afterwards.
set -euo pipefail

ROUNDS=5
WORKLOADS=mixed,random
RUN_SECONDS=1
die() { echo "ab-compare: $*" >&2; exit 2; }
# Everything after the first `--` goes to the bench; getopts would eat it.
ARGS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do ARGS+=("$1"); shift; done
[ $# -gt 0 ] && shift
EXTRA=("$@")
set -- "${ARGS[@]}"
while getopts ":n:w:s:h" opt; do
  case $opt in
    n) ROUNDS=$OPTARG ;;
    w) WORKLOADS=$OPTARG ;;
    s) RUN_SECONDS=$OPTARG ;;
    h) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "bad option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
REVS=("$@")
[ ${#REVS[@]} -le 2 ] || die "at most two revisions (BEFORE [AFTER]), got: ${REVS[*]}"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "-n $ROUNDS: not a positive count"
for a in "${EXTRA[@]}"; do
  case $a in
    --workload* | --rounds* | --json* | --idle-seconds* | --seconds* | --ops*)
      die "$a: set by the script (use -w, -n, -s)" ;;
  esac
done
IFS=, read -r -a WL <<<"$WORKLOADS"

cd "$(dirname "$0")/../.."
[ ${#REVS[@]} -ge 1 ] || die "a BEFORE revision is needed (see -h)"
BEFORE=${REVS[0]}
AFTER=${REVS[1]:-}
BEFORE_SHA=$(git rev-parse -q --verify "$BEFORE^{commit}") || die "no such revision: $BEFORE"
if [ -n "$AFTER" ]; then
  AFTER_SHA=$(git rev-parse -q --verify "$AFTER^{commit}") || die "no such revision: $AFTER"
  AFTER_DESC="$AFTER (${AFTER_SHA:0:10})"
else
  AFTER_DESC="working tree (HEAD $(git rev-parse --short=10 HEAD)"
  git diff --quiet HEAD -- Cargo.toml src || AFTER_DESC+=", uncommitted changes in src/Cargo.toml"
  AFTER_DESC+=")"
fi

AB_DIR=${AB_DIR:-/var/tmp/blockcache-ab}
mkdir -p "$AB_DIR"
exec 9>"$AB_DIR/.lock"
flock -n 9 || die "another ab-compare is using $AB_DIR (set AB_DIR to run one beside it)"
WORK=$AB_DIR/run
rm -rf "$WORK"
mkdir -p "$WORK/out" "$WORK/bin"
cleanup() {
  if [ "${AB_KEEP:-0}" = 1 ]; then echo "kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The current tool, as the working tree has it (tracked and untracked files).
TOOL_FILES=$(git ls-files --cached --others --exclude-standard -- tools/blockcache-bench benches/suite.rs)

# drop_call RIG NAME OLD NEW: in the tool copy's rig.rs, replace the call OLD
# (a Config method NAME the BEFORE crate lacks) by NEW; it must be there once.
drop_call() {
  python3 - "$@" <<'EOF'
import sys
p, name, old, new = sys.argv[1:5]
s = open(p).read()
if s.count(old) != 1:
    sys.exit(f"ab-compare: the {name} patch does not apply to {p}: update the script")
open(p, "w").write(s.replace(old, new))
EOF
  echo "$side: crate has no Config::$2; its tool copy omits the call" >&2
}

# export SIDE REV|"" : a buildable workspace in $WORK/SIDE.
export_side() {
  local side=$1 rev=$2 dest=$WORK/$1
  mkdir -p "$dest"
  if [ -n "$rev" ]; then
    git archive --format=tar "$rev" | tar -x -m -C "$dest"
  else
    # The working tree, uncommitted changes included (files that exist now).
    git ls-files -z --cached --others --exclude-standard -- Cargo.toml src benches examples |
      while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
      tar -c --null -T - -f - | tar -x -m -C "$dest"
  fi
  rm -rf "$dest/tools"
  # shellcheck disable=SC2086 # one path per line, none with spaces
  tar -c -f - $TOOL_FILES | tar -x -m -C "$dest"
  cp Cargo.lock "$dest/Cargo.lock" # same dependency versions on both sides
  if ! grep -q '^\[workspace\]' "$dest/Cargo.toml"; then
    printf '\n[workspace]\nmembers = ["tools/blockcache-bench"]\n' >>"$dest/Cargo.toml"
  fi
  local rig="$dest/tools/blockcache-bench/src/rig.rs"
  # Before the fast hit path there is no switch: every get goes through
  # the owner thread (the tool's rows of mixed and random all ask for the
  # default, fast hits on). Before readahead its rows (scan's `cache raN`)
  # run without it.
  grep -rq 'pub fn fast_hits' "$dest/src" || drop_call "$rig" fast_hits $'\n            .fast_hits(spec.fast_hits);' ";"
  grep -rq 'pub fn readahead' "$dest/src" || drop_call "$rig" readahead $'\n            .readahead(spec.readahead)' ""
  echo "$side: building ${rev:-working tree} ..." >&2
  CARGO_TARGET_DIR=$AB_DIR/target-$side cargo build --release -q \
    --manifest-path "$dest/Cargo.toml" -p blockcache-bench --bin blockcache-bench
  cp "$AB_DIR/target-$side/release/blockcache-bench" "$WORK/bin/$side"
}

export_side before "$BEFORE_SHA"
export_side after "$AFTER"

SECS=(--seconds "$RUN_SECONDS")
run() { # run SIDE WORKLOAD ROUND
  local side=$1 w=$2 r=$3 base=$WORK/out/$2-$1-$3 t0
  t0=$(date +%s%N)
  if ! flock /tmp/blockcache-bench.lock "$WORK/bin/$side" --workload "$w" --rounds 1 --idle-seconds 0 \
    "${SECS[@]}" --json "$base.json" "${EXTRA[@]}" >"$base.txt" 2>"$base.err"; then
    cat "$base.txt" "$base.err" >&2
    die "$side $w round $r failed"
  fi
  printf '  round %d/%d  %-7s %-6s %5d ms\n' "$r" "$ROUNDS" "$w" "$side" \
    $((($(date +%s%N) - t0) / 1000000)) >&2
}
echo "running: ${WL[*]}, $ROUNDS round(s) per side, ${RUN_SECONDS} s per run" >&2
for r in $(seq "$ROUNDS"); do
  for w in "${WL[@]}"; do
    if [ $((r % 2)) = 1 ]; then run before "$w" "$r"; run after "$w" "$r"
    else run after "$w" "$r"; run before "$w" "$r"; fi
  done
done

echo "before: $BEFORE (${BEFORE_SHA:0:10}) $(git log -1 --format=%s "$BEFORE_SHA")"
echo "after:  $AFTER_DESC"
echo "bench:  blockcache-bench --rounds 1 --seconds $RUN_SECONDS${EXTRA[*]:+ ${EXTRA[*]}}" \
  "--idle-seconds 0; $ROUNDS round(s) per side, alternating"
python3 - "$WORK/out" "$ROUNDS" "${WL[@]}" <<'EOF'
import json, statistics, sys
out, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = statistics.median

def rows(w, side, r):
    rep = json.load(open(f"{out}/{w}-{side}-{r}.json"))["report"]
    return {(s["threads"], row["label"]): row for s in rep["sections"] for row in s["rows"]}

print()
print(f"{'workload':<8} {'thr':>3} {'row':<22} {'ops/s before':>12} {'after':>9} "
      f"{'after/before':>12} {'(min..max)':>12}  {'p99 µs before':>13} {'after':>7} {'ratio':>5}")
for w in workloads:
    runs = [(rows(w, "before", r), rows(w, "after", r)) for r in range(1, rounds + 1)]
    keys = list(runs[0][0])
    for b, a in runs:
        if list(b) != keys or list(a) != keys:
            sys.exit(f"ab-compare: the two sides ran different cases of {w}: {list(b)} vs {list(a)}")
    # Cache rows first (what is compared), then the baselines (noise check).
    keys.sort(key=lambda k: not runs[0][0][k]["is_cache"])
    for k in keys:
        b = [x[k]["median"] for x, _ in runs]
        a = [y[k]["median"] for _, y in runs]
        ops = [y["ops_per_sec"] / x["ops_per_sec"] for x, y in zip(b, a) if x["ops_per_sec"] > 0]
        p99 = [y["p99_us"] / x["p99_us"] for x, y in zip(b, a) if x["p99_us"] > 0]
        label = k[1] if runs[0][0][k]["is_cache"] else f"  ({k[1]})"
        f = lambda v: f"{med(v):.3f}" if v else "-"
        print(f"{w:<8} {k[0]:>3} {label:<22} {med(x['ops_per_sec'] for x in b):>12.0f} "
              f"{med(y['ops_per_sec'] for y in a):>9.0f} {f(ops):>12} "
              f"{(f'{min(ops):.2f}..{max(ops):.2f}' if ops else '-'):>12}  "
              f"{med(x['p99_us'] for x in b):>13.1f} {med(y['p99_us'] for y in a):>7.1f} "
              f"{(f'{med(p99):.2f}' if p99 else '-'):>5}")
print()
print("after/before: median over rounds of the per-round ratio (ops/s > 1 is faster; p99 < 1 is")
print("better). Rows in parentheses are baselines, the same code on both sides: their ratios")
print("show the noise of this run.")
EOF
