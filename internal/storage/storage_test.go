package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	storage_go "github.com/supabase-community/storage-go"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

const publicBase = "https://videos.example.test"

func setup(t *testing.T) (*supabasetest.Server, *storage.Client) {
	t.Helper()
	fake := supabasetest.New(t, 1000)
	c, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ServiceRoleKey(),
		Bucket: "videos", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c
}

// put sends what a browser sends to a signed upload URL, through the stand-in.
func put(t *testing.T, fake *supabasetest.Server, signed, contentType string, body []byte) (int, string) {
	t.Helper()
	u := fake.URL + strings.TrimPrefix(signed, publicBase)
	req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSignedUploadFlow(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	ctx := context.Background()
	signed, err := c.SignUpload(ctx, "raw/a.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(signed, publicBase+"/storage/v1/object/upload/sign/videos/raw/a.mp4?token=") {
		t.Fatalf("signed url %q is not absolute on the public base", signed)
	}
	if code, body := put(t, fake, signed, "video/mp4", []byte("0123456789")); code != 200 || !strings.Contains(body, `"Key":"videos/raw/a.mp4"`) {
		t.Fatalf("upload: %d %s", code, body)
	}
	info, err := c.Stat(ctx, "raw/a.mp4")
	if err != nil || info.Size != 10 || info.ContentType != "video/mp4" || info.ETag == "" {
		t.Fatalf("stat: %+v %v", info, err)
	}
	// A second PUT with a non-upsert token is refused, as an HTTP 400 with the
	// real status in the body.
	if code, body := put(t, fake, signed, "video/mp4", []byte("x")); code != 400 || !strings.Contains(body, `"statusCode":"409"`) {
		t.Fatalf("second upload: %d %s", code, body)
	}
	// The token is for one path only.
	other := strings.Replace(signed, "raw/a.mp4", "raw/b.mp4", 1)
	if code, body := put(t, fake, other, "video/mp4", []byte("x")); code != 400 || !strings.Contains(body, "InvalidSignature") {
		t.Fatalf("other path: %d %s", code, body)
	}
	// POST is not an upload with that URL: it is the authenticated route.
	resp, err := http.Post(fake.URL+strings.TrimPrefix(signed, publicBase), "video/mp4", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"403"`) {
		t.Fatalf("POST to signed url: %d %s", resp.StatusCode, b)
	}
}

func TestSignedUploadChecksAtUploadTime(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	ctx := context.Background()
	cases := []struct {
		name, path, contentType string
		size                    int
		want                    string
	}{
		{"wrong type", "raw/t.mp4", "application/pdf", 10, `"415"`},
		{"over the bucket limit", "raw/big.mp4", "video/mp4", 1001, `"413"`},
	}
	for _, tc := range cases {
		signed, err := c.SignUpload(ctx, tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := put(t, fake, signed, tc.contentType, make([]byte, tc.size)); code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
	}
	signed, _ := c.SignUpload(ctx, "raw/limit.mp4")
	if code, body := put(t, fake, signed, "video/webm", make([]byte, 1000)); code != 200 {
		t.Fatalf("at the limit: %d %s", code, body)
	}
	// storage-go's own UploadToSignedUrl forces text/plain: the video bucket refuses it.
	signed, _ = c.SignUpload(ctx, "raw/lib.mp4")
	lib := storage_go.NewClient(fake.URL+"/storage/v1", fake.ServiceRoleKey(), nil)
	if _, err := lib.UploadToSignedUrl(strings.TrimPrefix(signed, publicBase+"/storage/v1"), strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "mime type text/plain") {
		t.Fatalf("storage-go UploadToSignedUrl: %v", err)
	}
}

func TestExpiredUploadURL(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	fake.UploadURLExpiry = -time.Minute
	signed, err := c.SignUpload(context.Background(), "raw/old.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := put(t, fake, signed, "video/mp4", []byte("x")); code != 400 || !strings.Contains(body, "InvalidJWT") || !strings.Contains(body, "exp") {
		t.Fatalf("expired: %d %s", code, body)
	}
}

func TestStatErrors(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	ctx := context.Background()
	if _, err := c.Stat(ctx, "raw/missing.mp4"); !errors.Is(err, jobs.ErrObjectMissing) || errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("missing: %v", err)
	}
	fake.Put("videos/raw/x.mp4", []byte("abc"), "video/mp4")
	for _, status := range []int{500, 429, 544, 503, 408, 423} {
		fake.FailNext(supabasetest.OpInfo, 1, status)
		if _, err := c.Stat(ctx, "raw/x.mp4"); !errors.Is(err, jobs.ErrUnavailable) {
			t.Fatalf("status %d: %v", status, err)
		}
	}
	fake.FailNext(supabasetest.OpInfo, 1, 403)
	var se *storage.Error
	if _, err := c.Stat(ctx, "raw/x.mp4"); !errors.As(err, &se) || se.Status != 403 || errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("403 answer: %v", err)
	}
	fake.SetDown(true)
	if _, err := c.Stat(ctx, "raw/x.mp4"); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("down: %v", err)
	}
	fake.SetDown(false)
	if info, err := c.Stat(ctx, "raw/x.mp4"); err != nil || info.Size != 3 {
		t.Fatalf("back: %+v %v", info, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBlockedCallIsBoundedByContext(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	entered, release := fake.Block(supabasetest.OpSignUpload)
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.SignUpload(ctx, "raw/slow.mp4")
		errc <- err
	}()
	wait.Recv(t, entered, "the sign request to reach the server")
	cancel()
	if err := wait.Recv(t, errc, "the cancelled sign"); !errors.Is(err, jobs.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sign: %v", err)
	}
}

func TestStorageGoErrorsKeepOnlyTheMessage(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	fake.FailNext(supabasetest.OpSignUpload, 1, 500)
	_, err := c.SignUpload(context.Background(), "raw/e.mp4")
	var se *storage.Error
	if !errors.As(err, &se) || se.Status != 0 || !strings.Contains(se.Message, "injected failure 500") || !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("sign failure: %#v", err)
	}
}

func TestDownloadStreamsWithRange(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	data := bytes.Repeat([]byte("0123456789"), 100)
	fake.Put("videos/raw/d.mp4", data, "video/mp4")
	body, size, err := c.Download(context.Background(), "raw/d.mp4")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if size != 1000 || !bytes.Equal(got, data) {
		t.Fatalf("download: size %d, %d bytes", size, len(got))
	}
	if _, _, err := c.Download(context.Background(), "raw/none.mp4"); !errors.Is(err, jobs.ErrObjectMissing) {
		t.Fatalf("missing: %v", err)
	}
	// Range and 416 on the wire, and a signed download URL from storage-go.
	lib := storage_go.NewClient(fake.URL+"/storage/v1", fake.ServiceRoleKey(), nil)
	signed, err := lib.CreateSignedUrl("videos", "raw/d.mp4", 60)
	if err != nil {
		t.Fatal(err)
	}
	for rng, want := range map[string]int{"bytes=10-19": 206, "bytes=5000-": 416} {
		req, _ := http.NewRequest(http.MethodGet, signed.SignedURL, nil)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 206 && string(b) != "0123456789") {
			t.Fatalf("range %s: %d %q", rng, resp.StatusCode, b)
		}
	}
}

func TestUploadIsSizedAndUpserts(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	ctx := context.Background()
	for _, content := range []string{"first", "second!"} {
		if err := c.Upload(ctx, "slim/u.mp4", strings.NewReader(content), int64(len(content)), "video/mp4"); err != nil {
			t.Fatal(err)
		}
	}
	if info, ok := fake.Object("videos/slim/u.mp4"); !ok || info.Size != 7 {
		t.Fatalf("upsert: %+v", info)
	}
	// With a Content-Length the bucket limit applies...
	err := c.Upload(ctx, "slim/big.mp4", bytes.NewReader(make([]byte, 1001)), 1001, "video/mp4")
	var se *storage.Error
	if !errors.As(err, &se) || se.Status != 413 {
		t.Fatalf("over the limit: %v", err)
	}
	// ...while storage-go's UploadFile sends chunked and skips it.
	lib := storage_go.NewClient(fake.URL+"/storage/v1", fake.ServiceRoleKey(), nil)
	ct := "video/mp4"
	if _, err := lib.UploadFile("videos", "slim/chunked.mp4", bytes.NewReader(make([]byte, 1001)), storage_go.FileOptions{ContentType: &ct}); err != nil {
		t.Fatal(err)
	}
	if info, _ := fake.Object("videos/slim/chunked.mp4"); info.Size != 1001 {
		t.Fatalf("chunked upload: %+v", info)
	}
}

func TestListAndRemove(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	fake.Put("videos/raw/Abc.mp4", []byte("1"), "video/mp4")
	fake.Put("videos/raw/abd.mp4", []byte("22"), "video/mp4")
	fake.Put("videos/slim/abc.mp4", []byte("3"), "video/mp4")
	lib := storage_go.NewClient(fake.URL+"/storage/v1", fake.ServiceRoleKey(), nil)
	files, err := lib.ListFiles("videos", "raw/", storage_go.FileSearchOptions{})
	if err != nil || len(files) != 2 || files[0].Name != "Abc.mp4" {
		t.Fatalf("list: %+v %v", files, err)
	}
	// prefix is a folder, not a name prefix.
	if files, _ := lib.ListFiles("videos", "raw/Abc.mp4", storage_go.FileSearchOptions{}); len(files) != 0 {
		t.Fatalf("file as prefix: %+v", files)
	}
	// Ours: the files directly in a folder, none of its sub-folders.
	fake.Put("videos/raw/sub/deeper.mp4", []byte("4"), "video/mp4")
	if names, err := c.List(context.Background(), "raw"); err != nil || strings.Join(names, ",") != "Abc.mp4,abd.mp4" {
		t.Fatalf("List: %q %v", names, err)
	}
	if names, err := c.List(context.Background(), "nothing-here"); err != nil || len(names) != 0 {
		t.Fatalf("List of an empty folder: %q %v", names, err)
	}
	if err := c.Remove(context.Background(), "raw/Abc.mp4", "raw/none.mp4"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Object("videos/raw/Abc.mp4"); ok {
		t.Fatal("not removed")
	}
	// More than Storage deletes in one request (1,000): a deleted job's
	// every screenshot, many jobs at once.
	var many []string
	for i := range 2500 {
		p := fmt.Sprintf("frames/job/%d.jpg", i)
		fake.Put("videos/"+p, []byte("j"), "image/jpeg")
		many = append(many, p)
	}
	if err := c.Remove(context.Background(), many...); err != nil {
		t.Fatalf("removing 2,500 objects: %v", err)
	}
	if names, err := c.List(context.Background(), "frames/job"); err != nil || len(names) != 0 {
		t.Fatalf("%d of 2,500 left, %v", len(names), err)
	}
}

// Many links in one request: one per object that exists, on the public
// base, each reading its own object without credentials for the time asked.
func TestSignManyDownloads(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	fake.Put("videos/frames/a/one.jpg", []byte("one"), "image/jpeg")
	fake.Put("videos/frames/a/two.jpg", []byte("two"), "image/jpeg")
	calls := fake.Calls(supabasetest.OpSignDownloads)
	got, err := c.SignPublicDownloads(context.Background(), []string{"frames/a/two.jpg", "frames/a/gone.jpg", "frames/a/one.jpg"}, time.Minute)
	if err != nil || len(got) != 2 || fake.Calls(supabasetest.OpSignDownloads)-calls != 1 {
		t.Fatalf("%v %v", got, err)
	}
	for path, body := range map[string]string{"frames/a/one.jpg": "one", "frames/a/two.jpg": "two"} {
		u, ok := strings.CutPrefix(got[path], publicBase+"/storage/v1/object/sign/videos/"+path+"?token=")
		if !ok {
			t.Fatalf("%s: %q", path, got[path])
		}
		resp, err := http.Get(fake.URL + "/storage/v1/object/sign/videos/" + path + "?token=" + u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != body {
			t.Errorf("%s: %d %q", path, resp.StatusCode, b)
		}
	}
	// Nothing to sign asks nothing (the server wants at least one path).
	if got, err := c.SignPublicDownloads(context.Background(), nil, time.Minute); err != nil || len(got) != 0 ||
		fake.Calls(supabasetest.OpSignDownloads)-calls != 1 {
		t.Fatalf("no paths: %v %v", got, err)
	}
}

// Every call builds its own storage-go client, so its shared header map is
// never written by two goroutines: -race proves it.
func TestConcurrentCallsAreRaceFree(t *testing.T) {
	t.Parallel()
	fake, c := setup(t)
	fake.Put("videos/raw/r.mp4", []byte("r"), "video/mp4")
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for range 20 {
		wg.Go(func() {
			_, err := c.SignUpload(context.Background(), "raw/c.mp4")
			errs <- err
		})
		wg.Go(func() { errs <- c.Remove(context.Background(), "raw/none.mp4") })
		wg.Go(func() { errs <- c.Upload(context.Background(), "slim/c.mp4", strings.NewReader("abc"), 3, "video/mp4") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []storage.Config{
		{URL: "127.0.0.1:54321", ServiceKey: "k", Bucket: "videos"},
		{URL: "http://x", PublicURL: "/rel", ServiceKey: "k", Bucket: "videos"},
		{URL: "http://x", Bucket: "videos"},
	} {
		if _, err := storage.New(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

// What the stand-in answers on the wire where the real server is odd.
func TestStandInWireQuirks(t *testing.T) {
	t.Parallel()
	fake, _ := setup(t)
	fake.Put("videos/raw/h.mp4", []byte("hello"), "video/mp4")
	head := func(path, key string) *http.Response {
		req, _ := http.NewRequest(http.MethodHead, fake.URL+"/storage/v1/object/"+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := head("videos/raw/h.mp4", fake.ServiceRoleKey()); r.StatusCode != 200 || r.ContentLength != 5 || r.Header.Get("ETag") == "" {
		t.Fatalf("HEAD: %d %d %v", r.StatusCode, r.ContentLength, r.Header)
	}
	if r := head("videos/raw/none.mp4", fake.ServiceRoleKey()); r.StatusCode != 400 || r.ContentLength > 0 {
		t.Fatalf("HEAD on a missing object: %d", r.StatusCode)
	}
	// Reads need a user (the videos read policy); anon sees nothing.
	if r := head("authenticated/videos/raw/h.mp4", fake.UserToken("u", time.Hour)); r.StatusCode != 200 {
		t.Fatalf("user HEAD: %d", r.StatusCode)
	}
	if r := head("authenticated/videos/raw/h.mp4", fake.AnonKey()); r.StatusCode != 400 {
		t.Fatalf("anon HEAD: %d", r.StatusCode)
	}
	// Writes are the service role's alone.
	req, _ := http.NewRequest(http.MethodPost, fake.URL+"/storage/v1/object/upload/sign/videos/raw/x.mp4", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+fake.UserToken("u", time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"statusCode":"403"`) {
		t.Fatalf("user signing an upload: %d %s", resp.StatusCode, b)
	}
}

// A refused service key is a configuration error, told apart from an outage
// on every path (storage-go's, whose statuses are lost, and net/http's); no
// answer, a refused connection and a gateway's 502 stay outages.
func TestRefusedKeyIsNotAnOutage(t *testing.T) {
	t.Parallel()
	fake, good := setup(t)
	bad, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ForeignServiceRoleKey(),
		Bucket: "videos", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fake.Put("videos/raw/a.mp4", []byte("x"), "video/mp4")
	calls := func(c *storage.Client) map[string]error {
		_, signErr := c.SignUpload(ctx, "raw/b.mp4")
		_, statErr := c.Stat(ctx, "raw/a.mp4")
		_, _, dlErr := c.Download(ctx, "raw/a.mp4")
		return map[string]error{"sign": signErr, "stat": statErr, "download": dlErr, "ping": c.Ping(ctx),
			"upload": c.Upload(ctx, "raw/c.mp4", strings.NewReader("y"), 1, "video/mp4"), "remove": c.Remove(ctx, "raw/a.mp4")}
	}
	for op, err := range calls(bad) {
		if !errors.Is(err, jobs.ErrRefusedKey) || errors.Is(err, jobs.ErrUnavailable) {
			t.Errorf("%s with a foreign key: %v (refused key: %v, outage: %v)", op, err, errors.Is(err, jobs.ErrRefusedKey), errors.Is(err, jobs.ErrUnavailable))
		}
	}
	fake.FailNext(supabasetest.OpInfo, 1, http.StatusBadGateway)
	if _, err := good.Stat(ctx, "raw/a.mp4"); !errors.Is(err, jobs.ErrUnavailable) || errors.Is(err, jobs.ErrRefusedKey) {
		t.Errorf("a gateway's 502: %v", err)
	}
	fake.SetDown(true)
	for op, err := range calls(good) {
		if !errors.Is(err, jobs.ErrUnavailable) || errors.Is(err, jobs.ErrRefusedKey) {
			t.Errorf("%s with storage down: %v", op, err)
		}
	}
}

// A 404 that is not the storage server's "object not found" — a gateway
// with no route while it reloads — is an outage, retried; before, it was
// taken for a missing upload and failed the job for good.
func TestAGatewaysNotFoundIsAnOutage(t *testing.T) {
	t.Parallel()
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"message":"no Route matched with those values"}`))
	}))
	t.Cleanup(gw.Close)
	c, err := storage.New(storage.Config{URL: gw.URL, ServiceKey: "k", Bucket: "videos", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _, dlErr := c.Download(ctx, "raw/00000000-0000-0000-0000-000000000001.mp4")
	_, statErr := c.Stat(ctx, "raw/00000000-0000-0000-0000-000000000001.mp4")
	for op, err := range map[string]error{"download": dlErr, "stat": statErr} {
		if errors.Is(err, jobs.ErrObjectMissing) || !errors.Is(err, jobs.ErrUnavailable) {
			t.Errorf("%s through a gateway's 404: %v (missing: %v)", op, err, errors.Is(err, jobs.ErrObjectMissing))
		}
	}
	// A storage server older than the error codes says "not_found" alone:
	// that is a missing object.
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"statusCode":"404","error":"not_found","message":"Object not found"}`))
	}))
	t.Cleanup(old.Close)
	c, err = storage.New(storage.Config{URL: old.URL, ServiceKey: "k", Bucket: "videos", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "raw/00000000-0000-0000-0000-000000000001.mp4"); !errors.Is(err, jobs.ErrObjectMissing) || errors.Is(err, jobs.ErrUnavailable) {
		t.Errorf("an older server's not_found: %v", err)
	}
}

// A storage-go call given up on is cancelled on the wire: while storage stays
// silent, 50 timed-out calls leave no goroutine and no connection behind on
// the client's side (storage-go's requests carry no context and its client
// has no timeout).
func TestAbandonedCallsLeakNothing(t *testing.T) {
	fake, c := setup(t)
	_, release := fake.Block(supabasetest.OpSignUpload)
	defer release()
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if _, err := c.SignUpload(ctx, "raw/slow.mp4"); !errors.Is(err, jobs.ErrUnavailable) {
			t.Fatalf("a call to silent storage: %v", err)
		}
		cancel()
	}
	wait.For(t, "no client goroutine (call, connection) left waiting on silent storage after 50 abandoned calls", 10*time.Second,
		func() bool { return clientGoroutines() == 0 }, func() string { return fmt.Sprintf("%d left", clientGoroutines()) })
}

// clientGoroutines counts the goroutines of storage-go calls and of HTTP
// client connections (the stand-in's own server goroutines are not counted).
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "net/http.(*persistConn)") || strings.Contains(g, "storage-go") {
			n++
		}
	}
	return n
}
