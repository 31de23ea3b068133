#!/usr/bin/env bash
# The long adversarial runs, in one command (not part of CI):
#   1. every cargo-fuzz target for FUZZ_SECONDS (default 600, 0 skips) each, on stable (-s none),
#      from its corpus and the seeds in fuzz/seeds/<target>/ if any;
#      a crash stops the run and its input is kept under fuzz/artifacts/;
#   2. a soak: sitio (release) in front of the demo service at half of the
#      saturation rate measured just before, for SOAK_SECONDS (default 600),
#      sampling sitio's RSS and open fds every 10 s; passes when both stay
#      within 10% and no request fails.
#   3. slow clients against the release build (stress/slow_clients.sh);
#   4. sitio, nginx and HAProxy side by side under slowloris, slow body, slow
#      read and 10,000 idle clients (stress/reliability.py, docs/reliability.md).
# Results land in stress/results/ (a summary on stdout, details in files).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-600}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
out=stress/results
mkdir -p "$out"

command -v hey >/dev/null || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y -qq hey; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

if [ "$FUZZ_SECONDS" -gt 0 ]; then
echo "== fuzzing, ${FUZZ_SECONDS}s per target"
  cargo fuzz build -s none
  for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    # Seeds kept in the repository (fuzz/seeds/), read along with the corpus.
    seeds=(); [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    if cargo fuzz run -s none "$target" "fuzz/corpus/$target" "${seeds[@]}" -- -max_total_time="$FUZZ_SECONDS" \
        > "$out/fuzz-$target.log" 2>&1; then
      echo "fuzz $target: $(grep -E '^Done' "$out/fuzz-$target.log" | tail -1)"
    else
      echo "fuzz $target: CRASH, see $out/fuzz-$target.log and fuzz/artifacts/$target/"
      exit 1
    fi
  done
fi

echo "== soak, ${SOAK_SECONDS}s at half of saturation"
cargo build --release --quiet
bin=target/release/sitio
pick() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
svc=$(pick); port=$(pick); admin=$(pick)
TARGET_PORT=$svc "$bin" demo-backend >/dev/null 2>&1 & svc_pid=$!
PORT=$port TARGET_PORT=$svc SITIO_ADMIN_PORT=$admin SITIO_ACCESS_LOG=off "$bin" >/dev/null 2>&1 & sitio_pid=$!
trap 'kill $svc_pid $sitio_pid 2>/dev/null || true' EXIT
sleep 1
url="http://127.0.0.1:$port/photos/1.svg"
sat=$(hey -z 10s -c 32 "$url" | awk '/Requests\/sec/ {print int($2)}')
rate=$((sat / 2)); workers=8
echo "saturation ${sat} req/s; soaking at ${rate} req/s"
sample() { echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$sitio_pid/status) $(ls /proc/$sitio_pid/fd | wc -l)"; }
: > "$out/soak-samples.txt"
( while kill -0 $sitio_pid 2>/dev/null; do sample >> "$out/soak-samples.txt"; sleep 10; done ) & sampler=$!
hey -z "${SOAK_SECONDS}s" -c $workers -q $((rate / workers)) "$url" > "$out/soak-hey.txt"
kill $sampler 2>/dev/null || true
python3 - "$out" "$sat" "$rate" <<'PY'
import re, sys
out, sat, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [list(map(int, l.split())) for l in open(f"{out}/soak-samples.txt") if l.strip()]
hey = open(f"{out}/soak-hey.txt").read()
codes = dict((int(c), int(n)) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", hey))
errors = re.search(r"Error distribution:(.*)", hey, re.S)
failed = sum(n for c, n in codes.items() if c != 200) + (len(errors.group(1).strip().splitlines()) if errors else 0)
k = max(1, len(rows) // 6)
first = rows[1:1 + k] or rows[:k]; last = rows[-k:]
avg = lambda xs, i: sum(r[i] for r in xs) / len(xs)
rss0, rss1, fd0, fd1 = avg(first, 1), avg(last, 1), avg(first, 2), avg(last, 2)
flat = lambda a, b: b <= a * 1.10
ok = flat(rss0, rss1) and flat(fd0, fd1) and failed == 0
p99 = re.search(r"99% in ([\d.]+) secs", hey)
summary = (f"soak: saturation {sat} req/s, soaked at {rate} req/s, {sum(codes.values())} requests, "
           f"{failed} failed, p99 {float(p99.group(1)) * 1000:.2f} ms, "
           f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, fds {fd0:.0f} -> {fd1:.0f}: {'PASS' if ok else 'FAIL'}")
print(summary)
open(f"{out}/summary.txt", "a").write(summary + "\n")
sys.exit(0 if ok else 1)
PY

echo "== slow clients, release build"
kill $svc_pid $sitio_pid 2>/dev/null || true
trap - EXIT
./stress/slow_clients.sh

echo "== sitio, nginx and HAProxy side by side"
command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v slowhttptest >/dev/null ||
  { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y -qq nginx haproxy slowhttptest; }
python3 stress/reliability.py | tee "$out/reliability.txt"
