package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/runops/runops/internal/jobs"
)

// jwks is the project's JWKS (SUPABASE_JWKS_URL) as last fetched, fetched
// again when a token names a key it does not list, and when it is older
// than jwksMaxAge. Fetches are paced: at most one starts every
// jwksFetchGap, and every lookup that needs one while one is due shares it.
// So a flood of tokens of made-up key ids costs one fetch a second, and a
// token of the project's new key waits at most that long for it (keyfunc's
// own refresh, once in 5 minutes for all callers, could be spent by anyone,
// and then refused the new key's tokens for the hour).
//
// A key the JWKS does not list is an invalid token; a JWKS that cannot be
// fetched is jobs.ErrUnavailable (a 503 to try again, never a 401 that
// signs the user out), unless the keys fetched before list the key.
type jwks struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	cur     *fetchedKeys // the last fetch that succeeded; nil before one
	next    *jwksFetch   // the fetch that is due or under way, which lookups share
	started time.Time    // when the last fetch started
}

// fetchedKeys is a JWKS as fetched, and when.
type fetchedKeys struct {
	keys keyfunc.Keyfunc
	at   time.Time
}

// jwksFetch is one fetch, shared by the lookups that wait for it.
type jwksFetch struct {
	done    chan struct{}
	started time.Time // set when it starts
	keys    *fetchedKeys
	err     error
}

const (
	jwksFetchGap  = time.Second
	jwksMaxAge    = 5 * time.Minute
	jwksFetchTime = 5 * time.Second // one fetch's whole time
)

// newJWKS starts fetching the JWKS at u; a failure is no error (the first
// lookup fetches again).
func newJWKS(u string) (*jwks, error) {
	if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return nil, fmt.Errorf("not an http(s) URL: %q", u)
	}
	j := &jwks{url: u, client: &http.Client{Timeout: jwksFetchTime}}
	j.due()
	return j, nil
}

// noFetch marks a context whose lookups use the keys fetched already, and
// wait for no fetch.
type noFetch struct{}

// key is the key that verifies t: t must name one (kid), as Supabase's
// tokens do; without it a token would be checked against every key listed,
// and kept past the withdrawal of the one that signed it.
func (j *jwks) key(ctx context.Context, t *jwt.Token) (any, error) {
	asked := time.Now()
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("a token signed with the project's keys names its key (kid)")
	}
	cur := j.current()
	mayFetch := ctx.Value(noFetch{}) == nil
	switch {
	case cur == nil && !mayFetch:
		return nil, fmt.Errorf("fetch the JWKS: %w: not fetched yet", jobs.ErrUnavailable)
	case cur == nil:
		fresh, err := j.fetchSince(ctx, time.Time{})
		if err != nil {
			return nil, err
		}
		cur = fresh
	case time.Since(cur.at) > jwksMaxAge:
		j.due() // for the next requests: this one goes on with what it has
	}
	key, err := cur.keys.KeyfuncCtx(ctx)(t)
	if errors.Is(err, jwkset.ErrKeyNotFound) && mayFetch {
		// Only a fetch begun since this lookup can say the key is unknown:
		// one under way may have been sent before the key was published.
		fresh, ferr := j.fetchSince(ctx, asked)
		if ferr != nil {
			return nil, ferr
		}
		key, err = fresh.keys.KeyfuncCtx(ctx)(t)
	}
	return key, err
}

// listed tells whether the JWKS, as last fetched, lists kid, without
// waiting for a fetch; one older than jwksMaxAge is fetched again for the
// next requests (a token kept from a withdrawn key is refused once it is).
func (j *jwks) listed(kid string) bool {
	if j == nil {
		return false
	}
	cur := j.current()
	if cur == nil {
		return false
	}
	if time.Since(cur.at) > jwksMaxAge {
		j.due()
	}
	_, err := cur.keys.Storage().KeyRead(context.Background(), kid)
	return err == nil
}

func (j *jwks) current() *fetchedKeys {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cur
}

// fetchSince waits for a fetch that began at since or later (the next one
// due: due) and returns its keys, or jobs.ErrUnavailable when it failed or
// ctx ended first.
func (j *jwks) fetchSince(ctx context.Context, since time.Time) (*fetchedKeys, error) {
	for {
		f := j.due()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("fetch the JWKS: %w: %w", jobs.ErrUnavailable, ctx.Err())
		}
		if !f.started.Before(since) {
			return f.keys, f.err
		}
	}
}

// due is the next fetch: the one due or under way already, or a new one,
// at least jwksFetchGap after the last began.
func (j *jwks) due() *jwksFetch {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.next == nil {
		j.next = &jwksFetch{done: make(chan struct{})}
		go j.run(j.next, time.Until(j.started.Add(jwksFetchGap)))
	}
	return j.next
}

// run is fetch f, after wait: the pace of fetches, not a wait for anything.
func (j *jwks) run(f *jwksFetch, wait time.Duration) {
	time.Sleep(wait)
	j.mu.Lock()
	j.started = time.Now()
	f.started = j.started
	j.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTime)
	defer cancel()
	// No refresh of its own (RefreshInterval 0): one request, an error
	// when it fails.
	store, err := jwkset.NewStorageFromHTTP(j.url, jwkset.HTTPClientStorageOptions{Client: j.client, Ctx: ctx, HTTPTimeout: jwksFetchTime})
	var keys keyfunc.Keyfunc
	if err == nil {
		keys, err = keyfunc.New(keyfunc.Options{Storage: store})
	}
	j.mu.Lock()
	if err != nil {
		f.err = fmt.Errorf("fetch the JWKS: %w: %w", jobs.ErrUnavailable, err)
	} else {
		f.keys = &fetchedKeys{keys: keys, at: time.Now()}
		j.cur = f.keys
	}
	j.next = nil // a lookup from now on waits for the next
	j.mu.Unlock()
	close(f.done)
}
