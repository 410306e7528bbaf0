package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/logsink"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
)

// BenchmarkAccessLog: what a request's access-log line costs beside the
// handler that answers it — job-status of a row, through the whole
// middleware chain, 32 requests at once — with no log, with JSON lines
// written to a pipe straight (slog holds its lock across each write), and
// through logsink, as `runops serve` writes them. A reader drains the pipe,
// as a log collector does.
//
//	go test -run '^$' -bench AccessLog ./internal/api/
func BenchmarkAccessLog(b *testing.B) {
	pool, _ := pgtest.Pool(b)
	id := uuid.NewString()
	if _, err := pool.Exec(context.Background(), `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'processing', '{"stage": "frames", "progress": 0.5}')`, id); err != nil {
		b.Fatal(err)
	}
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	objects, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"none", "pipe", "logsink"} {
		b.Run(mode, func(b *testing.B) {
			var out io.Writer = io.Discard
			if mode != "none" {
				r, w, err := os.Pipe()
				if err != nil {
					b.Fatal(err)
				}
				drained := make(chan struct{})
				go func() { _, _ = io.Copy(io.Discard, r); close(drained) }()
				defer func() { w.Close(); <-drained; r.Close() }()
				out = w
				if mode == "logsink" {
					sink := logsink.New(w)
					defer sink.Close()
					out = sink
				}
			}
			log := slog.New(slog.NewJSONHandler(out, nil))
			if mode == "none" {
				log = slog.New(slog.DiscardHandler)
			}
			h := api.Handler(api.Options{Jobs: postgres.NewJobStore(pool), Objects: objects, SOPs: postgres.NewSOPLocker(pool), Logger: log})
			b.SetParallelism(16) // 32 on 2 CPUs
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/job-status/"+id, nil))
					if rec.Code != http.StatusOK {
						b.Errorf("status %d: %s", rec.Code, rec.Body)
						return
					}
				}
			})
		})
	}
}
