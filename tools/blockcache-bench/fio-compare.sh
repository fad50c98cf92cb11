#!/usr/bin/env bash
# The raw io_uring baseline of blockcache-bench next to fio on the same
# file: 4 KiB random O_DIRECT reads at depth 1, 8 and 32, fio and the tool
# alternating, ROUNDS times; prints the median IOPS and p50/p99 total
# latency of each (fio's `lat`, not `clat`: submission included).
#
#   apt-get install -y fio
#   tools/blockcache-bench/fio-compare.sh [FILE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
FILE=${1:-/var/tmp/blockcache-bench-fio.img}
ROUNDS=${2:-3}
SECONDS_PER_RUN=3
command -v fio >/dev/null || { echo "fio is not installed (apt-get install -y fio)" >&2; exit 1; }
cargo build --release -q -p blockcache-bench
B=target/release/blockcache-bench
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ ! -s "$FILE" ]; then
  fio --name=fill --filename="$FILE" --size=256M --rw=write --bs=1M --direct=1 --output=/dev/null
fi
for r in $(seq "$ROUNDS"); do
  for qd in 1 8 32; do
    fio --name=rr --filename="$FILE" --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
      --iodepth=$qd --runtime=$SECONDS_PER_RUN --time_based --lat_percentiles=1 \
      --output-format=json >"$OUT/fio-$r-$qd.json"
  done
  "$B" --file "$FILE" --workload random --depth 8,32 --baseline uring --seconds $SECONDS_PER_RUN \
    --rounds 1 --idle-seconds 0 --json "$OUT/tool-$r.json" >/dev/null
done
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
print(f"{'depth':>5} {'fio IOPS':>9} {'tool IOPS':>9} {'ratio':>6}   {'fio p50':>8} {'tool p50':>8}   {'fio p99':>8} {'tool p99':>8}  (µs)")
for qd in (1, 8, 32):
    fio = [json.load(open(f"{out}/fio-{r}-{qd}.json"))["jobs"][0]["read"] for r in range(1, rounds + 1)]
    rows = []
    for r in range(1, rounds + 1):
        rep = json.load(open(f"{out}/tool-{r}.json"))["report"]
        rows += [row["median"] for row in rep["sections"][0]["rows"] if row["label"] == f"uring qd{qd}"]
    fi = med(j["iops"] for j in fio)
    ti = med(r["ops_per_sec"] for r in rows)
    fp = lambda k: med(j["lat_ns"]["percentile"][k] / 1000 for j in fio)
    print(f"{qd:>5} {fi:>9.0f} {ti:>9.0f} {ti / fi:>5.2f}x   {fp('50.000000'):>8.1f} "
          f"{med(r['p50_us'] for r in rows):>8.1f}   {fp('99.000000'):>8.1f} {med(r['p99_us'] for r in rows):>8.1f}")
EOF
