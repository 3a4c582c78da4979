#!/usr/bin/env bash
# Runs every gpu_ test of the test binaries in DIR (default .gpu/tests, as ../shared/gpu-bundle
# gathers them) in parallel processes: each binary at once, and a binary of more than 8 such
# tests split into 6 groups of them. Each process runs its tests one at a time, as
# .gpu/run-tests.sh does (the kernels' JIT compiles are what take long, on the CPU). Prints each
# test's line, then one summary line; a process that dies before its summary counts as one
# failure. With GPU_TESTS_DEADLINE_S=N, processes still running after N seconds are stopped and
# each counts as one failure, its running test named, so that the summary line is printed before
# an outer time limit would cut the whole script off. Usage:
#   [GPU_TESTS_DEADLINE_S=N] bash scripts/gpu-tests-parallel.sh [DIR]
set -u
dir=${1:-.gpu/tests}
export PSG_REQUIRE_GPU=1 RUST_BACKTRACE=1
logs=$(mktemp -d)
set -m
i=0
launch() { # binary, then test names (none: all gpu_ tests)
  local bin=$1; shift
  if [ $# -eq 0 ]; then set -- gpu_; else set -- "$@" --exact; fi
  ( "$bin" "$@" --include-ignored --test-threads=1 > "$logs/$i.log" 2>&1; echo $? > "$logs/$i.rc" ) &
  i=$((i + 1))
}
for t in "$dir"/*; do
  [ -x "$t" ] || continue
  names=$("$t" gpu_ --include-ignored --list 2>/dev/null | sed -n 's/: test$//p')
  count=$(echo "$names" | grep -c . || true)
  if [ "$count" -le 8 ]; then
    launch "$t"
  else
    for g in 0 1 2 3 4 5; do
      # shellcheck disable=SC2046
      launch "$t" $(echo "$names" | awk -v g="$g" 'NR % 6 == g')
    done
  fi
done
deadline=${GPU_TESTS_DEADLINE_S:-0}
if [ "$deadline" -gt 0 ]; then
  while [ -n "$(jobs -pr)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
  # Each process is its own job (set -m): its group goes, before it can write its status.
  for pid in $(jobs -pr); do kill -TERM -- "-$pid" 2>/dev/null; done
fi
wait
passed=0 failed=0 status=0
for l in "$logs"/*.log; do
  if [ ! -f "${l%.log}.rc" ]; then
    running=$(grep -E '^test .* \.\.\. *$' "$l" | tail -1 | sed 's/^test \(.*\) \.\.\..*/\1/')
    grep -E '^test .*(ok|FAILED|ignored)$|panicked' "$l" || true
    echo "$(basename "$l"): stopped after ${deadline} s, in ${running:-its start}"
    failed=$((failed + 1)); status=1; continue
  fi
  code=$(cat "${l%.log}.rc")
  grep -E '^test |test result|panicked|error' "$l" || true
  summary=$(sed -n 's/^test result: .*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$l" | tail -1)
  if [ -z "$summary" ]; then
    echo "$(basename "$l"): exited with $code before its summary:"; tail -5 "$l"
    failed=$((failed + 1)); status=1; continue
  fi
  passed=$((passed + ${summary% *})); failed=$((failed + ${summary#* }))
  [ "$code" -eq 0 ] || status=1
done
rm -rf "$logs"
echo "gpu tests: $passed passed, $failed failed (filter 'gpu_', parallel)"
exit $status
