#!/usr/bin/env bash
# weights-pov quick grid (56 runs), twice each, alternating: the process pool (2 workers) and Ray (1 CPU per run, 2 CPUs)
cd "$(dirname "$0")/.."
: "${MANUALBP_DATA:?set MANUALBP_DATA to the data root (CIFAR-10 under it)}"
mkdir -p runs/throughput
for i in 1 2; do
  for e in pool ray; do
    rm -rf runs/throughput/$e$i
    if [ $e = pool ]; then a="--workers 2"; else a="--engine ray --cpus-per-run 1"; fi
    s=$(date +%s.%N); python scripts/sweep.py weights-pov --preset quick $a --sweep-dir runs/throughput/$e$i --no-report log.progress=false > runs/throughput/$e$i.log 2>&1
    echo "$e$i exit $? wall $(awk "BEGIN {print $(date +%s.%N) - $s}") s" >> runs/throughput/times.txt
  done
done
