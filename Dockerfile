# Build: a static binary.
# Pinned to go.mod's version: the image sets GOTOOLCHAIN=local, so an older 1.26 cannot build it.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/runops ./cmd/runops

# Run: ffmpeg/ffprobe and Tesseract for the worker, CA certificates for Supabase and Gemini,
# a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg tesseract-ocr tesseract-ocr-eng ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin runops
COPY --from=build /out/runops /usr/local/bin/runops
USER 10001:10001
ENV RUNOPS_ADDR=:8080
EXPOSE 8080
# The image has no curl: the binary asks its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["runops", "healthcheck"]
# One image for every command: serve (default), api, worker, migrate, jobs, process.
ENTRYPOINT ["runops"]
CMD ["serve"]
