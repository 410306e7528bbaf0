package supabasetest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// CDN stands in for the CDN hosted Supabase puts in front of Storage
// (docs/dependencies.md, "Supabase Storage"): it keeps the 200 answers to
// object downloads (GET of /object/authenticated/… and of signed URLs),
// one copy for each caller (Authorization), and answers later downloads
// with it. Object info, signing, listing and uploads pass through.
//
//   - Basic: a copy is kept as the object's Cache-Control says (max-age;
//     not at all under no-cache or no-store), one for each whole URL: a
//     query string makes another.
//   - Smart (Pro plan and up): every copy is kept, whatever its
//     Cache-Control, one for each path (query strings are passed over),
//     until the object changes, which the hosted CDN learns within 60 s.
//     This one never learns it: a test sees the worst of that minute.
type CDN struct {
	*httptest.Server
	origin *url.URL
	smart  bool

	mu   sync.Mutex
	kept map[string]keptAnswer
	hits int
}

type keptAnswer struct {
	header http.Header
	body   []byte
}

// NewCDN puts a CDN in front of the Storage stand-in at origin (its URL).
func NewCDN(t testing.TB, origin string, smart bool) *CDN {
	u, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	c := &CDN{origin: u, smart: smart, kept: map[string]keptAnswer{}}
	c.Server = httptest.NewServer(c)
	t.Cleanup(c.Close)
	return c
}

// Hits is how many downloads the CDN answered from a kept copy.
func (c *CDN) Hits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

func (c *CDN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/storage/v1")
	download := r.Method == http.MethodGet && r.Header.Get("Range") == "" &&
		(strings.HasPrefix(p, "/object/authenticated/") || strings.HasPrefix(p, "/object/sign/") && r.URL.Query().Has("token"))
	key := r.Header.Get("Authorization") + " " + r.URL.RequestURI()
	if c.smart {
		key = r.Header.Get("Authorization") + " " + r.URL.Path
	}
	if download {
		c.mu.Lock()
		k, ok := c.kept[key]
		if ok {
			c.hits++
		}
		c.mu.Unlock()
		if ok {
			for name, v := range k.header {
				w.Header()[name] = v
			}
			w.Header().Set("Cf-Cache-Status", "HIT")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(k.body)
			return
		}
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, c.origin.String()+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.ContentLength = r.ContentLength
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for name, v := range resp.Header {
		w.Header()[name] = v
	}
	if !download || resp.StatusCode != http.StatusOK || !c.keeps(resp.Header.Get("Cache-Control")) {
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	var body bytes.Buffer
	if _, err := io.Copy(&body, resp.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c.mu.Lock()
	c.kept[key] = keptAnswer{header: resp.Header.Clone(), body: body.Bytes()}
	c.mu.Unlock()
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body.Bytes())
}

// keeps tells whether an answer with this Cache-Control is kept: by the
// Smart CDN always; by the basic one for a max-age above zero, and not
// under no-cache or no-store. (A kept copy is not dropped when its max-age
// ends: tests last seconds, max-ages an hour.)
func (c *CDN) keeps(cacheControl string) bool {
	if c.smart {
		return true
	}
	keep := false
	for d := range strings.SplitSeq(cacheControl, ",") {
		d = strings.TrimSpace(strings.ToLower(d))
		switch {
		case d == "no-cache", d == "no-store", d == "private":
			return false
		case strings.HasPrefix(d, "max-age="):
			n, err := strconv.Atoi(strings.TrimPrefix(d, "max-age="))
			keep = err == nil && n > 0
		}
	}
	return keep
}
