#!/usr/bin/env bash
# Installs from Debian's packages whatever provides the commands that are
# missing. Arguments are command:package pairs (a package list may hold
# several packages separated by spaces), e.g. `wrk:wrk "python3:python3 python3-pip"`.
set -euo pipefail
missing=()
for pair in "$@"; do
  if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
    read -r -a pkgs <<<"${pair#*:}"
    missing+=("${pkgs[@]}")
  fi
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
