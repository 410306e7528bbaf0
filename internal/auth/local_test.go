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
	l, err := auth.NewLocal(context.Background(), secret, "")
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

// A token kept from before its signing key was withdrawn from the JWKS is
// refused once the JWKS the verifier holds no longer lists the key — as it
// was when every request was verified from scratch.
func TestAKeptTokenOfAWithdrawnKeyIsRefused(t *testing.T) {
	t.Parallel()
	keyA, errA := rsa.GenerateKey(rand.Reader, 2048)
	keyB, errB := rsa.GenerateKey(rand.Reader, 2048)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	var mu sync.Mutex
	listed := map[string]*rsa.PrivateKey{"key-a": keyA}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var keys []any
		for kid, k := range listed {
			keys = append(keys, map[string]any{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(jwks.Close)
	l, err := auth.NewLocal(t.Context(), "", jwks.URL)
	if err != nil {
		t.Fatal(err)
	}
	signRS := func(kid string, key *rsa.PrivateKey, sub string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": sub, "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	old := signRS("key-a", keyA, "u-a")
	for range 2 { // verified, then kept
		if u, err := l.Verify(ctx, old); err != nil || u != "u-a" {
			t.Fatalf("a token of a listed key: %q %v", u, err)
		}
	}
	// The project rotates: key-a is withdrawn, key-b listed. A token of
	// key-b (unknown to the verifier) makes it fetch the JWKS again.
	mu.Lock()
	listed = map[string]*rsa.PrivateKey{"key-b": keyB}
	mu.Unlock()
	if u, err := l.Verify(ctx, signRS("key-b", keyB, "u-b")); err != nil || u != "u-b" {
		t.Fatalf("a token of the new key: %q %v", u, err)
	}
	if _, err := l.Verify(ctx, old); !errors.Is(err, jobs.ErrInvalidToken) {
		t.Fatalf("a kept token of the withdrawn key: %v", err)
	}
}
