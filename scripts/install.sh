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
  # Through env: sudo would drop the variable.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_missing[@]}" >/dev/null
  need_missing=()
}
# need_go DIR stops, saying why, unless a Go that builds the module in DIR
# is installed: the version its go.mod asks, or an older go that fetches it
# (GOTOOLCHAIN=auto, the default).
need_go() {
  command -v go >/dev/null || { echo "Go is not installed (https://go.dev/dl); this script installs everything else" >&2; exit 1; }
  local want
  want="$(sed -n 's/^go //p' "$1/go.mod")"
  (cd "$1" && go list -m >/dev/null 2>&1) || {
    echo "Go $want or newer is needed (go.mod); this one is $(GOTOOLCHAIN=local go env GOVERSION) and does not fetch it (GOTOOLCHAIN=$(go env GOTOOLCHAIN)): install Go $want (https://go.dev/dl)" >&2
    exit 1
  }
}
