package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/wait"
)

const secret = "a-test-projects-jwt-secret-of-at-least-32-characters"

func sign(t testing.TB, claims jwt.MapClaims, key string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newLocal(t testing.TB) *auth.Local {
	t.Helper()
	l, err := auth.NewLocal(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// What a token proved is kept until it expires, never past it; what a
// token failed to prove is not kept; and at most a bounded number is.
func TestLocalKeepsWhatATokenProvedUntilItExpires(t *testing.T) {
	t.Parallel()
	l := newLocal(t)
	now := time.Now()
	l.SetClock(func() time.Time { return now })
	exp := now.Add(time.Minute)
	user := sign(t, jwt.MapClaims{"sub": "u1", "aud": "authenticated", "role": "authenticated", "exp": exp.Unix()}, secret)
	ctx := context.Background()
	for range 2 {
		if u, err := l.Verify(ctx, user); err != nil || u != "u1" {
			t.Fatalf("valid token: %q %v", u, err)
		}
		if l.ServiceRole(user) {
			t.Fatal("a user's token taken for the service role")
		}
	}
	if l.Kept() != 1 {
		t.Fatalf("%d tokens kept, want 1", l.Kept())
	}
	// Within the leeway it still holds; past it, kept or not, it does not.
	now = exp.Add(4 * time.Second)
	if _, err := l.Verify(ctx, user); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	now = exp.Add(6 * time.Second)
	if _, err := l.Verify(ctx, user); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}

	// Refused, never kept: forged, not a session, expired.
	now = time.Now()
	for i := range 100 {
		forged := sign(t, jwt.MapClaims{"sub": fmt.Sprint(i), "aud": "authenticated", "exp": now.Add(time.Hour).Unix()}, "another-projects-secret-of-32-characters")
		if _, err := l.Verify(ctx, forged); !errors.Is(err, jobs.ErrInvalidToken) || l.ServiceRole(forged) {
			t.Fatalf("forged token: %v", err)
		}
	}
	for _, claims := range []jwt.MapClaims{
		{"sub": "u2", "aud": "authenticated"},                                                                     // no expiry
		{"sub": "u2", "exp": now.Add(time.Hour).Unix()},                                                           // no audience
		{"aud": "authenticated", "exp": now.Add(time.Hour).Unix()},                                                // no subject
		{"sub": "u2", "aud": "authenticated", "exp": now.Add(-time.Hour).Unix()},                                  // expired
		{"sub": "u2", "aud": "authenticated", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}, // not yet
	} {
		if u, err := l.Verify(ctx, sign(t, claims, secret)); !errors.Is(err, jobs.ErrInvalidToken) {
			t.Fatalf("%v: %q %v", claims, u, err)
		}
	}
	// The service role's token: no audience, subject or expiry asked.
	service := sign(t, jwt.MapClaims{"role": "service_role", "iss": "supabase"}, secret)
	for range 2 { // checked, then kept
		if !l.ServiceRole(service) {
			t.Fatal("service-role token refused")
		}
	}
	if _, err := l.Verify(ctx, service); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("the service role's token taken for a user's session: %v", err)
	}
	// Kept: the first user's, the three the project signed that are no
	// session, the service role's; never a forged or expired one.
	if l.Kept() != 5 {
		t.Fatalf("%d tokens kept, want 5", l.Kept())
	}
	// Bounded however many valid tokens come.
	for i := range 5000 {
		if _, err := l.Verify(ctx, sign(t, jwt.MapClaims{"sub": fmt.Sprint(i), "aud": "authenticated", "exp": now.Add(time.Hour).Unix()}, secret)); err != nil {
			t.Fatal(err)
		}
	}
	if l.Kept() > 4096 {
		t.Fatalf("%d tokens kept", l.Kept())
	}
}

// BenchmarkLocal: what the API pays to authenticate a request with a user's
// token (a service-role check, then the user's), parsed from scratch each
// time (a verifier per request, as before tokens were kept) and kept.
//
//	go test -run '^$' -bench Local ./internal/auth/
func BenchmarkLocal(b *testing.B) {
	user := sign(b, jwt.MapClaims{"sub": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "aud": "authenticated",
		"role": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}, secret)
	ctx := context.Background()
	for _, kept := range []bool{false, true} {
		b.Run(fmt.Sprintf("kept=%v", kept), func(b *testing.B) {
			l := newLocal(b)
			b.ReportAllocs()
			for b.Loop() {
				if !kept {
					l = newLocal(b)
				}
				if l.ServiceRole(user) {
					b.Fatal("service role")
				}
				if _, err := l.Verify(ctx, user); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// projectKeys stands in for the auth server's JWKS: the keys it lists, and
// whether it answers at all.
type projectKeys struct {
	*httptest.Server
	mu      sync.Mutex
	listed  map[string]*rsa.PrivateKey
	down    bool
	fetches int
}

// verifier is a verifier of the project's tokens through this JWKS.
func (p *projectKeys) verifier(t *testing.T) *auth.Local {
	t.Helper()
	l, err := auth.NewLocal("", p.URL)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newProjectKeys(t *testing.T, listed map[string]*rsa.PrivateKey) *projectKeys {
	p := &projectKeys{listed: listed}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fetches++
		if p.down {
			http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
			return
		}
		var keys []any
		for kid, k := range p.listed {
			keys = append(keys, map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(p.Close)
	return p
}

// set changes what the JWKS lists and whether it answers.
func (p *projectKeys) set(listed map[string]*rsa.PrivateKey, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listed, p.down = listed, down
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signRS signs claims with key, naming it kid ("": no kid).
func signRS(t *testing.T, kid string, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func userClaims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}
}

// A token kept from before its signing key was withdrawn from the JWKS is
// refused once the JWKS the verifier holds no longer lists the key — as it
// was when every request was verified from scratch.
func TestAKeptTokenOfAWithdrawnKeyIsRefused(t *testing.T) {
	t.Parallel()
	keyA, keyB := rsaKey(t), rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"key-a": keyA})
	l := jwks.verifier(t)
	ctx := context.Background()
	old := signRS(t, "key-a", keyA, userClaims("u-a"))
	for range 2 { // verified, then kept
		if u, err := l.Verify(ctx, old); err != nil || u != "u-a" {
			t.Fatalf("a token of a listed key: %q %v", u, err)
		}
	}
	// The project rotates: key-a is withdrawn, key-b listed. A token of
	// key-b (unknown to the verifier) makes it fetch the JWKS again.
	jwks.set(map[string]*rsa.PrivateKey{"key-b": keyB}, false)
	if u, err := l.Verify(ctx, signRS(t, "key-b", keyB, userClaims("u-b"))); err != nil || u != "u-b" {
		t.Fatalf("a token of the new key: %q %v", u, err)
	}
	if _, err := l.Verify(ctx, old); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("a kept token of the withdrawn key: %v", err)
	}
}

// A JWKS that cannot be fetched makes a valid token unavailable (a 503 to
// try again), never invalid (a 401 that signs its user out), and once it
// answers again the token is taken at the next fetch, a second or so
// later. Before, keyfunc started with no keys, called every token invalid,
// and had spent its one refresh in five minutes during the outage.
func TestAJWKSThatCannotBeFetchedIsAnOutage(t *testing.T) {
	t.Parallel()
	key := rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"k1": key})
	jwks.set(map[string]*rsa.PrivateKey{"k1": key}, true) // down as the API starts
	l := jwks.verifier(t)
	tok := signRS(t, "k1", key, userClaims("u1"))
	if _, err := l.Verify(context.Background(), tok); !errors.Is(err, jobs.ErrUnavailable) || errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("a valid token while the JWKS cannot be fetched: %v; want unavailable", err)
	}
	jwks.set(map[string]*rsa.PrivateKey{"k1": key}, false)
	var last error
	wait.For(t, "the token taken once the JWKS answers", 30*time.Second, func() bool {
		u, err := l.Verify(context.Background(), tok)
		last = err
		if errors.Is(err, jobs.ErrInvalidToken) {
			t.Fatalf("called invalid once the JWKS answered: %v", err)
		}
		return err == nil && u == "u1"
	}, func() string { return fmt.Sprint(last) })
}

// Tokens of made-up key ids, sent by anyone, cannot keep the project's new
// key unknown: a token of a key the JWKS lists since a moment is taken at
// the next fetch, which they cannot spend. Before, one such token spent
// keyfunc's one refresh in five minutes, and the new key's users were
// signed out (401) until the hourly refresh.
func TestMadeUpKeyIdsDoNotLockOutANewKey(t *testing.T) {
	t.Parallel()
	keyA, keyB, attacker := rsaKey(t), rsaKey(t), rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"key-a": keyA})
	l := jwks.verifier(t)
	ctx := context.Background()
	if _, err := l.Verify(ctx, signRS(t, "bogus", attacker, userClaims("x"))); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("a token of a made-up key: %v", err)
	}
	jwks.set(map[string]*rsa.PrivateKey{"key-a": keyA, "key-b": keyB}, false)
	var attack sync.WaitGroup
	for i := range 10 { // the attacker goes on, all at once
		bogus := signRS(t, fmt.Sprint("more-", i), attacker, userClaims("x"))
		attack.Go(func() { _, _ = l.Verify(ctx, bogus) })
	}
	if u, err := l.Verify(ctx, signRS(t, "key-b", keyB, userClaims("u-b"))); err != nil || u != "u-b" {
		t.Errorf("a token of the project's new key, among made-up ones: %q %v", u, err)
	}
	attack.Wait()
}

// A token signed with the project's keys names its key: one with no kid
// would be checked against every key listed, and kept past the withdrawal
// of the one that signed it (the cache keeps a token by the key it names).
// Supabase's tokens always name it.
func TestATokenWithoutAKeyIdIsRefused(t *testing.T) {
	t.Parallel()
	key := rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"k1": key})
	l := jwks.verifier(t)
	if _, err := l.Verify(context.Background(), signRS(t, "", key, userClaims("victim"))); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("a kid-less token of a listed key: %v", err)
	}
	if l.ServiceRole(signRS(t, "", key, jwt.MapClaims{"role": "service_role"})) {
		t.Fatal("a kid-less service_role token was taken")
	}
	if u, err := l.Verify(context.Background(), signRS(t, "k1", key, userClaims("u1"))); err != nil || u != "u1" {
		t.Fatalf("the same key's token naming it: %q %v", u, err)
	}
}

// A JWKS older than five minutes is fetched again even while every token
// is answered from the cache: a token kept from a key the project has since
// withdrawn is refused within the next fetch, not at its expiry. Before,
// only a token not kept made the verifier fetch the JWKS.
func TestAStaleJWKSIsFetchedAgainForKeptTokens(t *testing.T) {
	t.Parallel()
	keyA := rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"key-a": keyA})
	l := jwks.verifier(t)
	ctx := context.Background()
	kept := signRS(t, "key-a", keyA, userClaims("u-a"))
	if u, err := l.Verify(ctx, kept); err != nil || u != "u-a" {
		t.Fatalf("a token of a listed key: %q %v", u, err)
	}
	jwks.set(map[string]*rsa.PrivateKey{}, false) // key-a withdrawn
	l.AgeJWKS(10 * time.Minute)
	var last error
	wait.For(t, "the kept token refused", 30*time.Second, func() bool {
		_, last = l.Verify(ctx, kept)
		return errors.Is(last, jobs.ErrInvalidToken)
	}, func() string { return fmt.Sprint(last) })
}

// fetched is how many times the JWKS was asked for.
func (p *projectKeys) fetched() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches
}

// ServiceRole, asked first of every bearer token, waits for no fetch of the
// JWKS: a token of a key not fetched yet is fetched for once, by the
// Verify that follows. Before, each such token waited for two fetches.
func TestServiceRoleWaitsForNoFetch(t *testing.T) {
	t.Parallel()
	key, other := rsaKey(t), rsaKey(t)
	jwks := newProjectKeys(t, map[string]*rsa.PrivateKey{"k1": key})
	l := jwks.verifier(t)
	wait.For(t, "the first fetch", 30*time.Second, func() bool { return jwks.fetched() == 1 })
	unknown := signRS(t, "k2", other, jwt.MapClaims{"role": "service_role"})
	if l.ServiceRole(unknown) || jwks.fetched() != 1 {
		t.Fatalf("ServiceRole of a key not fetched: fetched %d times in all", jwks.fetched())
	}
	if _, err := l.Verify(context.Background(), unknown); !errors.Is(err, jobs.ErrInvalidToken) || jwks.fetched() != 2 {
		t.Fatalf("Verify: %v, fetched %d times in all", err, jwks.fetched())
	}
}
