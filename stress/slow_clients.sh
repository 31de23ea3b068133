#!/usr/bin/env bash
# Slow clients against a release sitio, as separate processes: a normal client
# (hey, fixed rate) measures success and p99 without attack, then under
# slowloris, slow body and slow read (slowhttptest). Target: 100% success and
# p99 within twice the unattacked run. Prints a table; exit 1 on a miss.
set -euo pipefail
cd "$(dirname "$0")/.."
out=stress/results
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/sitio
pick() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
svc=$(pick); port=$(pick); admin=$(pick)
TARGET_PORT=$svc "$bin" demo-backend >/dev/null 2>&1 & svc_pid=$!
PORT=$port TARGET_PORT=$svc SITIO_ADMIN_PORT=$admin SITIO_ACCESS_LOG=off \
  SITIO_HEADER_TIMEOUT=5s SITIO_BODY_TIMEOUT=5s SITIO_SEND_TIMEOUT=5s "$bin" >/dev/null 2>&1 & sitio_pid=$!
trap 'kill $svc_pid $sitio_pid 2>/dev/null || true' EXIT
sleep 1
url="http://127.0.0.1:$port/photos/1.svg"
measure() { # prints "requests failed p99_ms"
  hey -z "${1}s" -c 4 -q 100 "$url" > "$out/slow-hey.txt"
  python3 - "$out/slow-hey.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
codes = dict((int(c), int(n)) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", t))
errors = re.search(r"Error distribution:(.*)", t, re.S)
failed = sum(n for c, n in codes.items() if c != 200) + (len(errors.group(1).strip().splitlines()) if errors else 0)
p99 = float(re.search(r"99% in ([\d.]+) secs", t).group(1)) * 1000
print(sum(codes.values()), failed, f"{p99:.2f}")
PY
}
read -r n0 f0 p0 <<<"$(measure 10)"
printf '%-12s %9s %7s %9s %7s %s\n' mode requests failed "p99 ms" ratio verdict
printf '%-12s %9s %7s %9s %7s %s\n' none "$n0" "$f0" "$p0" 1.00 -
status=0
for mode in H B X; do
  case $mode in
    H) args=(-H -u "$url") ;;
    B) args=(-B -u "http://127.0.0.1:$port/api/photos" -s 65536) ;;
    X) args=(-X -u "http://127.0.0.1:$port/" -k 3 -n 1 -w 10 -y 20 -z 32) ;;
  esac
  slowhttptest "${args[@]}" -c 500 -r 100 -i 2 -l 20 -p 3 >/dev/null 2>&1 & attack=$!
  sleep 4
  read -r n f p <<<"$(measure 10)"
  wait $attack || true
  ratio=$(python3 -c "print(f'{$p / $p0:.2f}')")
  verdict=$(python3 -c "print('PASS' if $f == 0 and $p <= 2 * $p0 else 'FAIL')")
  [ "$verdict" = PASS ] || status=1
  printf '%-12s %9s %7s %9s %7s %s\n' "-$mode" "$n" "$f" "$p" "$ratio" "$verdict"
done
open=$(curl -s "127.0.0.1:$admin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections_open"])')
echo "connections still open 0 s after the last attack: $open"
exit $status
