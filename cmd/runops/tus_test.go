package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/supabasetest"
)

// tusInfo is the tus field of get-upload-url.
type tusInfo struct {
	Endpoint, Token, BucketName, ObjectName, ContentType string
	ChunkSize                                            int
}

func tusRequest(t *testing.T, method, url string, body []byte, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Tus-Resumable", "1.0.0")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// A client uploads the recording resumably with what get-upload-url returns:
// in 6 MiB chunks, breaking off after the first, resuming from HEAD's
// offset; then queues it, and the job completes.
func TestResumableUploadThroughTUS(t *testing.T) {
	d, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	ai := geminitest.New(t, "test-key")
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	_, _, base := startServe(t, binary(t), dsn, fake, "GOOGLE_GEMINI_BASE_URL="+ai.URL)

	// A recording of a little over 6 MiB (uncompressed picture): two chunks.
	video := mediatest.Make(t, t.TempDir(), "rec.mkv", mediatest.Spec{Width: 1280, Height: 720, FPS: 2, Seconds: 3, Codec: "rawvideo", Format: "mkv"})
	data, err := os.ReadFile(video)
	if err != nil || len(data) <= supabasetest.TusChunk {
		t.Fatalf("recording of %d bytes: %v", len(data), err)
	}

	resp, err := http.Post(base+"/api/get-upload-url", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		JobID string `json:"jobId"`
		TUS   tusInfo
	}
	_ = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	tus := up.TUS
	if tus.ChunkSize != 6291456 || tus.ObjectName != "raw/"+up.JobID+".mp4" || tus.BucketName != "videos" || tus.Token == "" ||
		tus.Endpoint != fake.URL+"/storage/v1/upload/resumable/sign" {
		t.Fatalf("tus %+v", tus)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	meta := fmt.Sprintf("bucketName %s,objectName %s,contentType %s,cacheControl %s", b64(tus.BucketName), b64(tus.ObjectName),
		b64("video/x-matroska"), b64("3600"))
	create := func(token string, length int) *http.Response {
		return tusRequest(t, "POST", tus.Endpoint, nil, "x-signature", token, "Upload-Length", strconv.Itoa(length), "Upload-Metadata", meta)
	}
	if r := create("not-a-token", len(data)); r.StatusCode != http.StatusForbidden && r.StatusCode != http.StatusBadRequest {
		t.Fatalf("a bad token: %d", r.StatusCode)
	}
	if r := create(tus.Token, int(jobs.MaxUploadBytes)+1); r.StatusCode != http.StatusRequestEntityTooLarge && r.StatusCode != http.StatusBadRequest {
		t.Fatalf("over the limit: %d", r.StatusCode)
	}
	r := create(tus.Token, len(data))
	location := r.Header.Get("Location")
	if r.StatusCode != http.StatusCreated || location == "" {
		t.Fatalf("create: %d %v", r.StatusCode, r.Header)
	}
	patch := func(offset int, chunk []byte) *http.Response {
		return tusRequest(t, "PATCH", location, chunk, "Upload-Offset", strconv.Itoa(offset), "Content-Type", "application/offset+octet-stream")
	}
	if r := patch(0, data[:tus.ChunkSize]); r.StatusCode != http.StatusNoContent || r.Header.Get("Upload-Offset") != strconv.Itoa(tus.ChunkSize) {
		t.Fatalf("first chunk: %d %v", r.StatusCode, r.Header)
	}
	// Broken off here. Later, the client asks where it stands and goes on.
	head := tusRequest(t, "HEAD", location, nil)
	offset, _ := strconv.Atoi(head.Header.Get("Upload-Offset"))
	if head.StatusCode != http.StatusOK || offset != tus.ChunkSize {
		t.Fatalf("HEAD: %d offset %v", head.StatusCode, head.Header.Get("Upload-Offset"))
	}
	if r := patch(0, data[:tus.ChunkSize]); r.StatusCode != http.StatusConflict {
		t.Fatalf("a chunk at a stale offset: %d", r.StatusCode)
	}
	if r := patch(offset, data[offset:]); r.StatusCode != http.StatusNoContent {
		t.Fatalf("last chunk: %d", r.StatusCode)
	}
	if obj, ok := fake.Object("videos/" + tus.ObjectName); !ok || obj.Size != int64(len(data)) {
		t.Fatalf("object %+v %v", obj, ok)
	}
	if r := create(tus.Token, len(data)); r.StatusCode != http.StatusConflict && r.StatusCode != http.StatusBadRequest {
		t.Fatalf("a second upload of an existing object: %d", r.StatusCode)
	}

	resp, err = http.Post(base+"/api/queue-job", "application/json", strings.NewReader(`{"jobId":"`+up.JobID+`"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("queue-job: %v %v", resp, err)
	}
	resp.Body.Close()
	d.waitFor("the job to complete", func() bool {
		st := d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, up.JobID)
		if st == "error" {
			t.Fatalf("job failed: %v", d.scalar(`SELECT error FROM jobs WHERE job_id = $1`, up.JobID))
		}
		return st == "completed"
	})
}
