#!/usr/bin/env bash
# A user's clean build, side by side: what `cargo test --no-run` costs a crate
# whose only dev-dependency is netns-test (with its default features, and
# sync-only without them), against the same crate with rstest instead.
#
#   benches/build_time.sh [ROUNDS] [--timings DIR] [--baseline CHECKOUT]
#
# Each contender is a scratch crate generated in a temporary directory (one
# sync and one async #[netns_test] with the default features; two sync ones
# with `default-features = false`; one #[rstest] with two cases), with
# netns-test by path: whatever this checkout's dependencies are when it runs,
# compiled as a dependency from crates.io is (not incrementally).
# Every build starts from an empty CARGO_TARGET_DIR; the contenders take
# turns in a new random order each round, and the table gives medians over
# the rounds (wall time, CPU time = user + system of cargo and every rustc,
# crates compiled). With --timings, one more build of each netns-test
# contender writes cargo's timing report to DIR and the slowest units are
# listed. With --baseline, another checkout of netns-test (the main branch
# before a change, say) is one more contender, with its default features.
# The crates are fetched first; the builds then run --offline.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
rounds=5
timings=""
baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --timings) timings="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --baseline) baseline="$(cd "$2" && pwd)"; shift 2 ;;
    [0-9]*) rounds="$1"; shift ;;
    *) echo "usage: $0 [ROUNDS] [--timings DIR] [--baseline CHECKOUT]" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/netns-test-build-time.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The user's environment, not this shell's: no wrapper, no flags, no shared
# target directory.
unset RUSTFLAGS RUSTDOCFLAGS RUSTC_WRAPPER CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR CARGO_INCREMENTAL

# scratch NAME DEPENDENCY-LINE TEST-SOURCE
scratch() {
  local dir="$work/$1"
  mkdir -p "$dir/src" "$dir/tests"
  cat >"$dir/Cargo.toml" <<EOF
[package]
name = "scratch-$1"
version = "0.1.0"
edition = "2021"

[dev-dependencies]
$2

[workspace]

# netns-test comes by path here, and cargo compiles a path dependency
# incrementally (1 s more of a clean build): built as a dependency from
# crates.io is, without.
[profile.dev.package.netns-test]
incremental = false

[profile.dev.package.netns-test-macros]
incremental = false
EOF
  echo "" >"$dir/src/lib.rs"
  printf '%s\n' "$3" >"$dir/tests/it.rs"
  # The same versions as this checkout's lock file, where it has them.
  cp "$repo/Cargo.lock" "$dir/Cargo.lock"
  (cd "$dir" && cargo fetch -q)
}

default_features_test='
use netns_test::netns_test;

#[netns_test]
fn binds_port_80() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(listener);
}

#[netns_test]
async fn binds_port_80_async() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(listener);
}'
scratch netns-test "netns-test = { path = \"$repo\" }" "$default_features_test"
if [ -n "$baseline" ]; then
  scratch baseline "netns-test = { path = \"$baseline\" }" "$default_features_test"
fi

scratch netns-test-sync "netns-test = { path = \"$repo\", default-features = false }" '
use netns_test::netns_test;

#[netns_test]
fn binds_port_80() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(listener);
}

#[netns_test]
fn binds_port_80_again() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(listener);
}'

scratch rstest 'rstest = "0.26"' '
use rstest::rstest;

#[rstest]
#[case(80)]
#[case(8080)]
fn binds(#[case] port: u16) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    drop(listener);
}'

contenders=(netns-test netns-test-sync rstest)
if [ -n "$baseline" ]; then contenders+=(baseline); fi

# build NAME [EXTRA CARGO ARGS]: one clean build; appends "wall cpu crates".
build() {
  local name="$1"; shift
  local dir="$work/$name" target="$work/target-$name"
  rm -rf "$target"
  (cd "$dir" && CARGO_TARGET_DIR="$target" /usr/bin/time -f '%e %U %S' -o "$work/time" \
    cargo test --no-run --offline "$@" 2>"$work/log") || { cat "$work/log" >&2; exit 1; }
  local crates
  crates=$(grep -c '^ *Compiling ' "$work/log" || true)
  read -r wall user sys <"$work/time"
  echo "$wall $(echo "$user + $sys" | bc) $crates" >>"$work/results-$name"
}

echo "$rounds rounds; load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2
for round in $(seq 1 "$rounds"); do
  for name in $(printf '%s\n' "${contenders[@]}" | shuf); do
    build "$name"
    echo "round $round: $name $(tail -n1 "$work/results-$name")" >&2
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rstest_wall=$(cut -d' ' -f1 "$work/results-rstest" | median)
rstest_cpu=$(cut -d' ' -f2 "$work/results-rstest" | median)
printf '\n| dev-dependency (medians of %s clean builds) | wall s | CPU s | crates | wall / rstest | CPU / rstest |\n' "$rounds"
printf '|---|---:|---:|---:|---:|---:|\n'
for name in "${contenders[@]}"; do
  wall=$(cut -d' ' -f1 "$work/results-$name" | median)
  cpu=$(cut -d' ' -f2 "$work/results-$name" | median)
  crates=$(cut -d' ' -f3 "$work/results-$name" | median)
  case "$name" in
    netns-test) label="netns-test (default features: one sync, one async test)" ;;
    netns-test-sync) label="netns-test, default-features = false (two sync tests)" ;;
    rstest) label="rstest (default features)" ;;
    baseline) label="baseline: $baseline (default features: one sync, one async test)" ;;
  esac
  printf '| %s | %.1f | %.1f | %s | %.2f | %.2f |\n' "$label" "$wall" "$cpu" "$crates" \
    "$(echo "$wall / $rstest_wall" | bc -l)" "$(echo "$cpu / $rstest_cpu" | bc -l)"
done

if [ -n "$timings" ]; then
  for name in netns-test netns-test-sync; do
    rm -rf "$work/target-$name"
    (cd "$work/$name" && CARGO_TARGET_DIR="$work/target-$name" \
      cargo test --no-run --offline --timings 2>/dev/null)
    cp "$work/target-$name/cargo-timings/cargo-timing.html" "$timings/$name.html"
    echo
    echo "$name: the slowest units (seconds, share of the sum) -> $timings/$name.html"
    # UNIT_DATA, in the report, is a JSON array of units with a name and duration.
    python3 - "$timings/$name.html" <<'PY'
import json, re, sys, collections
html = open(sys.argv[1]).read()
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\n\]);", html, re.S).group(1))
by_crate = collections.Counter()
for unit in units:
    by_crate[unit["name"]] += unit["duration"]
total = sum(by_crate.values())
for crate, seconds in by_crate.most_common(12):
    print(f"{seconds:6.2f} s {100 * seconds / total:5.1f} %  {crate}")
print(f"{total:6.2f} s in all")
PY
  done
fi
