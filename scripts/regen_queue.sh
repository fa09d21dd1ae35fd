#!/usr/bin/env bash
# One queue worker for regenerating tables from an empty cache; run two side by side on a
# 2-core machine. It pops the first line of JOBS (under flock): one or more run.py argument
# lists separated by ';', run in order (put the runs that share a pretrained model on one line,
# so two workers never wait on each other's pretraining). Each run is timed by /usr/bin/time;
# its line goes to LOGS/times.txt, which scripts/regen_cost.py turns into the cost table.
#
#   JOBS=jobs.txt LOGS=logs CACHE=cache OUT=outputs bash scripts/regen_queue.sh &
#   JOBS=jobs.txt LOGS=logs CACHE=cache OUT=outputs bash scripts/regen_queue.sh &
set -u
: "${JOBS:?a file of job lines}" "${LOGS:?a log directory}" "${CACHE:?a cache_dir}" "${OUT:?an output_root}"
python=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Keep freed tensor memory in glibc's heap instead of unmapping and re-faulting it every step
# (README, "glibc's allocator on CPU"): same results, a quarter to a third less CPU on Fashion-MNIST.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-4294967296}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-68719476736}
mkdir -p "$LOGS"
while true; do
  line=$(flock "$JOBS.lock" bash -c 'j=$(head -n1 "$0"); [ -n "$j" ] && sed -i 1d "$0"; echo "$j"' "$JOBS")
  [ -z "$line" ] && break
  IFS=';' read -ra runs <<< "$line"
  for run in "${runs[@]}"; do
    read -ra args <<< "$run"
    name=$(echo "${args[*]}" | tr ' =/' '_+-')
    /usr/bin/time -o "$LOGS/$name.time" -f "%e %U %S" "$python" run.py "${args[@]}" cpu_threads=1 \
        cache_dir="$CACHE" output_root="$OUT" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "$(date -u +%FT%TZ) rc=$rc $(tail -n1 "$LOGS/$name.time") ${args[*]}" >> "$LOGS/times.txt"
  done
done
