#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what is
# missing (PostgreSQL server binaries, ffmpeg/ffprobe, gcc for -race) from
# Debian packages, then runs every test with the race detector. Tests start
# their own throwaway PostgreSQL cluster (or use TEST_DATABASE_URL). A missing
# tool fails the suite; nothing is skipped.
# Extra arguments go to `go test` (e.g. -run TestQueue, or -bench . for benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null || missing+=(postgresql)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go is not installed (https://go.dev/dl); this script installs everything else" >&2; exit 1; }

export CGO_ENABLED=1
go vet ./...
go test -race -count=1 -timeout 20m "$@" ./...
# Every benchmark once, on small loads, so that none can rot (numbers: see README).
go test -run '^$' -bench . -benchtime 1x -short -count=1 -timeout 10m ./...
