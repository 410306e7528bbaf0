package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// BenchmarkWorkerPeakRSS runs the real worker binary on one upload of over
// 500 MB (uncompressed 1080p video, so decoding is cheap and the bytes are
// what is measured; 60 MB with -short) through the whole job (the Gemini
// stand-in answers) and reports the process's peak resident memory (VmHWM)
// against its own peak when idle and ready, measured in the same run.
//
//	go test -run '^$' -bench WorkerPeakRSS -benchtime 1x ./cmd/runops/
func BenchmarkWorkerPeakRSS(b *testing.B) {
	frames, rate := 170, "30" // × 3,110,400 bytes = 529 MB
	if testing.Short() {
		frames, rate = 20, "10" // 2 seconds: the sample answer shows a step at 00:00:01
	}
	dir := b.TempDir()
	video := filepath.Join(dir, "big.mkv")
	out, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate="+rate,
		"-frames:v", strconv.Itoa(frames), "-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-f", "matroska", video).CombinedOutput()
	if err != nil {
		b.Fatalf("%v %s", err, out)
	}
	st, _ := os.Stat(video)
	var idle, peak int64
	for range b.N {
		d, dsn := newDB(b)
		pool := d.pool
		p := startWorker(b, binary(b), dsn)
		idle = vmHWM(b, p.cmd.Process.Pid)
		id := uuid.NewString()
		p.fake.PutFile("videos/raw/"+id+".mp4", video, "video/mp4")
		if _, err := pool.Exec(b.Context(), `INSERT INTO jobs (job_id, metadata) VALUES ($1, jsonb_build_object('upload', jsonb_build_object('size_bytes', $2::bigint)))`, id, st.Size()); err != nil {
			b.Fatal(err)
		}
		d.waitFor("the job to end", func() bool {
			var status string
			_ = pool.QueryRow(b.Context(), `SELECT status FROM jobs WHERE job_id = $1`, id).Scan(&status)
			return status == "error" || status == "completed"
		})
		var msg *string
		_ = pool.QueryRow(b.Context(), `SELECT error FROM jobs WHERE job_id = $1`, id).Scan(&msg)
		if msg != nil {
			b.Fatalf("the job failed: %s", *msg)
		}
		peak = vmHWM(b, p.cmd.Process.Pid)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.waitExit(b); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Size())/1e6, "input-MB")
	b.ReportMetric(float64(idle)/1024, "idle-VmHWM-MB")
	b.ReportMetric(float64(peak)/1024, "peak-VmHWM-MB")
	b.ReportMetric(float64(peak)/float64(idle), "peak/idle")
	b.ReportMetric(0, "ns/op")
}

// vmHWM reads a process's peak resident set size, in KiB.
func vmHWM(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no VmHWM")
	return 0
}
