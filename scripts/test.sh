#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what is
# missing (PostgreSQL server binaries, ffmpeg/ffprobe, Tesseract OCR with its English data, gcc for -race) from
# Debian packages (and PgBouncer, which the pooler tests run in transaction
# mode), then runs every test with the race detector. Tests start
# their own throwaway PostgreSQL cluster (or use TEST_DATABASE_URL). A missing
# tool fails the suite; nothing is skipped.
# Extra arguments go to `go test` (e.g. -run TestQueue, or -bench . for benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/install.sh
need '/usr/lib/postgresql/*/bin/postgres' postgresql
need /usr/sbin/pgbouncer pgbouncer
need pgbench postgresql-client
need wrk wrk
need ffmpeg ffmpeg
need ffprobe ffmpeg
need tesseract tesseract-ocr
need /usr/share/tesseract-ocr/5/tessdata/eng.traineddata tesseract-ocr-eng
need /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf fonts-dejavu-core
need gcc gcc
need gcc libc6-dev
install_needed
need_go .

export CGO_ENABLED=1
go vet ./...
# staticcheck, pinned (2026.2.2): built from the Go module proxy like every dependency.
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
go test -race -count=1 -timeout 20m "$@" ./...
# Every benchmark once, on small loads, so that none can rot (numbers: see README).
go test -run '^$' -bench . -benchtime 1x -short -count=1 -timeout 10m ./...
