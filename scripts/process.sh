#!/usr/bin/env bash
# Turns one recording into an SOP on this machine: installs ffmpeg/ffprobe and
# Tesseract (the screenshots' privacy pass) from Debian packages when missing, then runs `runops process` (no Supabase,
# no PostgreSQL; GEMINI_API_KEY must be set).
#   GEMINI_API_KEY=... ./scripts/process.sh recording.mp4 [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
. "$here/scripts/install.sh"
need ffmpeg ffmpeg
need ffprobe ffmpeg
need tesseract tesseract-ocr
need /usr/share/tesseract-ocr/5/tessdata/eng.traineddata tesseract-ocr-eng
install_needed
need_go "$here"
# go run would add its own "exit status 1" to a refusal: build, then run.
(cd "$here" && go build -o .bin/runops ./cmd/runops)
exec "$here/.bin/runops" process "$@"
