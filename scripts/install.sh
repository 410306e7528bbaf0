#!/usr/bin/env bash
# Sourced by the other scripts: need CMD PACKAGE installs the Debian package
# when the command is missing (as root, or through sudo).
need_missing=()
need() {
  command -v "$1" >/dev/null || compgen -G "$1" >/dev/null || need_missing+=("$2")
}
install_needed() {
  [ ${#need_missing[@]} -gt 0 ] || return 0
  echo "installing: ${need_missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_missing[@]}" >/dev/null
  need_missing=()
}
