#!/usr/bin/env bash
# Runs psg-bench and the PyTorch baseline with the same arguments on this machine's GPU, then
# prints ONE combined table (op, shape, dtype, psg ms, psg x floor, torch ms, torch x floor,
# speed-up = torch / psg).
#
#   bench/run.sh                       # the full benchmark (3 shapes x f32, bf16; several minutes)
#   bench/run.sh --quick               # smoke test: small shapes, few runs
#   bench/run.sh --shapes 256x4M --dtypes f32 --ops mean,median --runs 30
#
# Arguments common to both tools: --shapes --dtypes --ops --runs --warmup --op-budget-s
# --bandwidth-mib --device --quick. Environment:
#   PSG_BENCH       the psg-bench binary (default: .gpu/bin/psg-bench under the repository root;
#                   build it with `cargo build --release -p psg-bench`)
#   PYTHON          the Python with torch (default: python3)
#   NVRTC_LIB_DIR   folder of libnvrtc.so.13 for psg-bench (default: found in PYTHON's
#                   site-packages nvidia/*/lib, else LD_LIBRARY_PATH as it is)
#   BENCH_OUT       folder for psg.json, torch.json, combined.json, the logs and the table
#                   (default: $OUT if set, else a new temporary folder)
#   PSG_BENCH_ARGS  extra arguments for psg-bench only (e.g. "--no-jit")
#   TORCH_ARGS      extra arguments for torch_baseline.py only
#   BENCH_VERBOSE=1 stream both tools' progress (by default it goes to the logs)
#   SKIP_PSG=1, SKIP_TORCH=1  run only one side (the table then leaves the other blank)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
bin="${PSG_BENCH:-$root/.gpu/bin/psg-bench}"
py="${PYTHON:-python3}"
out="${BENCH_OUT:-${OUT:-}}"
if [[ -z "$out" ]]; then
  out="$(mktemp -d -t psg-bench.XXXXXX)"
fi
mkdir -p "$out" || { echo "run.sh: cannot create $out" >&2; exit 1; }
rm -f "$out/psg.json" "$out/torch.json"

run_logged() { # name log command...
  local name="$1" log="$2"; shift 2
  local t0=$SECONDS rc
  echo "run.sh: running $name (log: $log)" >&2
  if [[ "${BENCH_VERBOSE:-0}" == 1 ]]; then
    "$@" 2>&1 | tee "$log" >&2
    rc=${PIPESTATUS[0]}
  else
    "$@" >"$log" 2>&1
    rc=$?
  fi
  echo "run.sh: $name finished with status $rc in $((SECONDS - t0)) s" >&2
  if [[ $rc -ne 0 ]]; then
    echo "---- last lines of $log ----" >&2
    tail -n 15 "$log" >&2
    echo "----" >&2
  fi
  return $rc
}

# psg needs libnvrtc.so.13 and its builtins on LD_LIBRARY_PATH before it starts: unless
# NVRTC_LIB_DIR says where, look for the PyPI wheel's folder (nvidia-cuda-nvrtc, which recent
# torch wheels install too) in this Python's site-packages.
if [[ -z "${NVRTC_LIB_DIR:-}" ]]; then
  NVRTC_LIB_DIR="$("$py" - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
    for base in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(base, "*", "lib"))):
            if glob.glob(os.path.join(d, "libnvrtc.so.13*")):
                print(d)
                raise SystemExit
except ImportError:
    pass
PY
)"
fi
psg_env=()
if [[ -n "${NVRTC_LIB_DIR:-}" ]]; then
  echo "run.sh: libnvrtc from $NVRTC_LIB_DIR" >&2
  psg_env=(env "LD_LIBRARY_PATH=$NVRTC_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi

status=0
if [[ "${SKIP_PSG:-0}" != 1 ]]; then
  if [[ -x "$bin" ]]; then
    # shellcheck disable=SC2086
    run_logged psg-bench "$out/psg.log" ${psg_env[@]+"${psg_env[@]}"} "$bin" "$@" ${PSG_BENCH_ARGS:-} --json "$out/psg.json" \
      || status=1
  else
    echo "run.sh: no psg-bench binary at $bin: build it with" >&2
    echo "  cargo build --release -p psg-bench  (then set PSG_BENCH=target/release/psg-bench)" >&2
    status=1
  fi
fi
if [[ "${SKIP_TORCH:-0}" != 1 ]]; then
  # shellcheck disable=SC2086
  run_logged torch_baseline "$out/torch.log" "$py" "$here/torch_baseline.py" "$@" ${TORCH_ARGS:-} \
    --json "$out/torch.json" || status=1
fi

"$py" "$here/combine.py" "$out/psg.json" "$out/torch.json" --json "$out/combined.json" \
  >"$out/table.txt" 2>"$out/combine.err"
crc=$?
echo "run.sh: results in $out (psg.json, torch.json, combined.json, table.txt, logs)" >&2
if [[ $crc -ne 0 ]]; then
  cat "$out/combine.err" >&2
  exit 1
fi
echo
cat "$out/table.txt"
exit $status
