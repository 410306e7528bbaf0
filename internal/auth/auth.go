// Package auth checks Supabase user access tokens and answers whose they
// are: locally against the project's JWT secret or JWKS (Local), or by asking
// the project's auth server (supabase-go's auth client, Verifier) with a
// timeout and a short cache. It must not decide what a user may do: that is the API's job.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/supabase-community/supabase-go"

	"github.com/runops/runops/internal/jobs"
)

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	client  *supabase.Client
	timeout time.Duration
	ttl     time.Duration
	now     func() time.Time
	cache   kept[[32]byte, entry]
}

type entry struct {
	user string // the user id
	err  error
}

// maxCache bounds memory under a flood of distinct bad tokens.
const maxCache = 10000

// New returns a verifier for the project at supabaseURL. ttl is how long an
// answer is reused (never past the token's own expiry).
func New(supabaseURL, serviceKey string, timeout, ttl time.Duration) (*Verifier, error) {
	c, err := supabase.NewClient(strings.TrimRight(supabaseURL, "/"), serviceKey, &supabase.ClientOptions{})
	if err != nil {
		return nil, fmt.Errorf("auth client: %w", err)
	}
	return &Verifier{client: c, timeout: timeout, ttl: ttl, now: time.Now, cache: kept[[32]byte, entry]{max: maxCache}}, nil
}

// Verify returns the token's user id, jobs.ErrInvalidToken, or an error wrapping
// jobs.ErrUnavailable when the auth server cannot answer.
func (v *Verifier) Verify(ctx context.Context, token string) (userID string, err error) {
	key := sha256.Sum256([]byte(token))
	now := v.now()
	if e, ok := v.cache.get(key, now); ok {
		return e.user, e.err
	}
	user, err := v.ask(ctx, token)
	if err != nil && !errors.Is(err, jobs.ErrInvalidToken) {
		return "", err // outages are not cached
	}
	expires := now.Add(v.ttl)
	if exp, ok := tokenExpiry(token); ok && exp.Before(expires) {
		expires = exp
	}
	v.cache.put(key, entry{user: user, err: err}, expires, now)
	return user, err
}

// statusInError reads the status gotrue-go puts only in its error text.
var statusInError = regexp.MustCompile(`^response status code (\d{3})`)

func (v *Verifier) ask(ctx context.Context, token string) (userID string, err error) {
	// gotrue-go takes no context, but it takes an http.Client: its timeout,
	// never past ctx's deadline, bounds the call. WithClient and WithToken
	// return copies, so this is safe per request.
	timeout := v.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return "", fmt.Errorf("ask auth server: %w: %w", jobs.ErrUnavailable, context.DeadlineExceeded)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("ask auth server: %w: %w", jobs.ErrUnavailable, err)
	}
	res, err := v.client.Auth.WithClient(http.Client{Timeout: timeout}).WithToken(token).GetUser()
	if err == nil {
		return res.ID.String(), nil
	}
	if m := statusInError.FindStringSubmatch(err.Error()); m != nil {
		if code, _ := strconv.Atoi(m[1]); code >= 400 && code < 500 && code != http.StatusTooManyRequests {
			return "", jobs.ErrInvalidToken
		}
	}
	return "", fmt.Errorf("ask auth server: %w: %w", jobs.ErrUnavailable, err)
}

// tokenExpiry reads the exp claim without checking the signature (the auth
// server has checked it); it only shortens how long an answer is cached.
func tokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}
