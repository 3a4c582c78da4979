#!/usr/bin/env bash
# Runs every gpu_ test of the test binaries in DIR (default .gpu/tests, as ../shared/gpu-bundle
# gathers them) in parallel processes: each binary at once, and a binary of more than 8 such
# tests split into 6 groups of them. Each process runs its tests one at a time, as
# .gpu/run-tests.sh does (the kernels' JIT compiles are what take long, on the CPU). Prints each
# test's line, then one summary line; a process that dies before its summary counts as one
# failure. Usage: bash scripts/gpu-tests-parallel.sh [DIR]
set -u
dir=${1:-.gpu/tests}
export PSG_REQUIRE_GPU=1 RUST_BACKTRACE=1
logs=$(mktemp -d)
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
wait
passed=0 failed=0 status=0
for l in "$logs"/*.log; do
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
