#!/usr/bin/env bash
# The project's entry points (README, first lines):
#   scripts/run.sh demo [arca demo flags]   build and run the end-to-end demo
#   scripts/run.sh test                     formatting, lints and every test
#   scripts/run.sh bench [--kind stockflow|kissflow|both] [--scale N]
#                        [--days K] [--reps R] [--tools LIST]
#                                           side-by-side run of the shared
#                                           harness, then the unchanged-source
#                                           backup step (benches/harness/)
# All three install the Debian packages the build needs when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the clone, reused by every clone and by CI on
# the same machine; override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/arca-target}"

ensure_system_packages() {
  local need=()
  [ -e /usr/include/rocksdb/c.h ] || need+=(librocksdb-dev)
  # libclang itself, as bindgen looks for it: libclang-cpp (which LLVM
  # packages bring along) does not do.
  compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null ||
    compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null ||
    need+=(libclang-dev)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  command -v cc >/dev/null || need+=(gcc)
  command -v c++ >/dev/null || need+=(g++)
  command -v fusermount3 >/dev/null || need+=(fuse3)
  # Readers the export tests check our ZIPs with (tests/export.rs).
  command -v 7z >/dev/null || need+=(p7zip-full)
  command -v unzip >/dev/null || need+=(unzip)
  command -v python3 >/dev/null || need+=(python3)
  python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}" >&2
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >&2
  fi
}

# Python packages the tests use: pyzipper (AES ZIP reader, tests/export.rs)
# and moto's S3 server (tests/s3.rs). Already there, or `pip install
# --user`, or, where pip refuses ("externally managed"), a venv under the
# target directory; ARCA_TEST_PYTHON names the interpreter.
ensure_python_packages() {
  local check="import pyzipper, moto.server"
  local pkgs=(pyzipper "moto[server]")
  python3 -c "$check" 2>/dev/null && return
  local venv="$CARGO_TARGET_DIR/pyvenv"
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    if python3 -m pip install --user -q "${pkgs[@]}" >&2 2>/dev/null &&
      python3 -c "$check" 2>/dev/null; then
      return
    fi
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q "${pkgs[@]}" >&2
  fi
  export ARCA_TEST_PYTHON="$venv/bin/python"
}

# The shared workbench (bench.py, peers.sh): not part of this repository.
shared_bench() {
  local dir="${ARCA_SHARED_BENCH:-$PWD/../shared/bench}"
  if [ ! -f "$dir/peers.sh" ] || [ ! -f "$dir/bench.py" ]; then
    echo "no shared bench (peers.sh, bench.py) in $dir; set ARCA_SHARED_BENCH to its directory" >&2
    exit 2
  fi
  (cd "$dir" && pwd)
}

bench_usage() {
  echo "usage: scripts/run.sh bench [--kind stockflow|kissflow|both] [--scale N] [--days K] [--reps R] [--tools LIST]" >&2
  exit 2
}

run_bench() {
  local kinds=both scale=10 days=4 reps=3 tools=restic,borg,rustic,arca
  while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || bench_usage
    case "$1" in
      --kind) kinds="$2" ;;
      --scale) scale="$2" ;;
      --days) days="$2" ;;
      --reps) reps="$2" ;;
      --tools) tools="$2" ;;
      *) bench_usage ;;
    esac
    shift 2
  done
  case "$kinds" in
    stockflow | kissflow) ;;
    both) kinds="stockflow kissflow" ;;
    *) bench_usage ;;
  esac
  [[ "$scale" =~ ^[1-9][0-9]*$ && "$reps" =~ ^[1-9][0-9]*$ && "$days" =~ ^[0-9]+$ ]] || bench_usage
  local bench
  bench="$(shared_bench)"
  ensure_system_packages
  cargo build --release --locked
  # A private copy: a rebuild of the target directory during a run (another
  # clone, CI) must not change the binary being measured.
  local bindir
  bindir="$(mktemp -d /tmp/arca-bench-bin.XXXXXX)"
  trap "rm -rf '$bindir'" EXIT
  cp "$CARGO_TARGET_DIR/release/arca" "$bindir/arca"
  export ARCA_BIN="$bindir/arca"
  echo "arca: $("$ARCA_BIN" --version), copied to $ARCA_BIN" >&2
  local adapters="$PWD/benches/harness/arca_adapter.py"
  local kind work done_list=()
  for kind in $kinds; do
    work="/tmp/bench-work/arca-$kind-s$scale"
    "$bench/peers.sh" run --adapters "$adapters" --kind "$kind" --scale "$scale" \
      --days "$days" --reps "$reps" --tools "$tools" --work "$work"
    python3 benches/harness/unchanged.py "$work" --bench-dir "$bench" \
      --adapters "$adapters" --tools "$tools" --reps "$reps"
    done_list+=("$work")
  done
  echo
  for work in "${done_list[@]}"; do
    echo "results: $work/results.md and $work/unchanged.json"
  done
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    ensure_system_packages
    cargo build --release --locked
    exec "$CARGO_TARGET_DIR/release/arca" demo "$@"
    ;;
  test)
    ensure_system_packages
    ensure_python_packages
    cargo fmt --all -- --check
    cargo clippy --locked --all-targets -- -D warnings
    cargo test --locked --all-targets
    # The main job once more, through the test build of the binary.
    "$CARGO_TARGET_DIR/debug/arca" demo --days 3 --scale 0.05
    ;;
  bench)
    run_bench "$@"
    ;;
  *)
    echo "usage: scripts/run.sh demo|test|bench" >&2
    exit 2
    ;;
esac
