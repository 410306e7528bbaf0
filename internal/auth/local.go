package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/runops/runops/internal/jobs"
)

// Local verifies Supabase user tokens itself, with no call per request: HS256
// tokens with the project's JWT secret (SUPABASE_JWT_SECRET), tokens signed
// with the project's asymmetric keys against its JWKS (SUPABASE_JWKS_URL,
// fetched and refreshed in the background). A token must carry a valid
// signature, an expiry in the future, the audience "authenticated" and a
// subject, which is the user; the issuer is not checked.
//
// A token is parsed and its signature checked once: what it proved is kept
// (by the token, at most maxChecked of them) until it expires, so a viewer
// polling with one token every few seconds costs a map lookup. A token that
// failed is not kept: nothing a caller sends can fill the cache but valid
// tokens. One signed with a JWKS key is kept only while the JWKS the
// verifier last fetched still lists that key (a withdrawn key's tokens are
// refused once the JWKS is fetched again, as before the cache: jwks.go).
type Local struct {
	secret  []byte
	jwks    *jwks // nil without SUPABASE_JWKS_URL
	now     func() time.Time
	checked kept[string, proven]
}

// proven is what a valid token showed.
type proven struct {
	user    string // "" unless a user's token (audience, subject, expiry)
	service bool   // role service_role
	kid     string // the JWKS key that signed it ("" for the secret's HS256)
}

const (
	// maxChecked bounds the tokens kept: a few thousand signed-in viewers.
	maxChecked = 4096
	// serviceTokenKept is how long a service-role token with no expiry
	// is kept.
	serviceTokenKept = time.Minute
)

// NewLocal returns a verifier with the secret, the JWKS at jwksURL, or both
// ("" for neither is an error). The JWKS is fetched at once, in the
// background.
func NewLocal(secret, jwksURL string) (*Local, error) {
	l := &Local{secret: []byte(secret), now: time.Now, checked: kept[string, proven]{max: maxChecked}}
	if jwksURL != "" {
		k, err := newJWKS(jwksURL)
		if err != nil {
			return nil, fmt.Errorf("SUPABASE_JWKS_URL: %w", err)
		}
		l.jwks = k
	}
	if secret == "" && l.jwks == nil {
		return nil, errors.New("a local verifier needs SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL")
	}
	return l, nil
}

// key picks the verification key by the token's algorithm: the secret for
// HS256, the JWKS for the rest.
func (l *Local) key(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if t.Method.Alg() == jwt.SigningMethodHS256.Alg() {
			if len(l.secret) == 0 {
				return nil, errors.New("HS256 token but no SUPABASE_JWT_SECRET")
			}
			return l.secret, nil
		}
		if l.jwks == nil {
			return nil, fmt.Errorf("%s token but no SUPABASE_JWKS_URL", t.Method.Alg())
		}
		return l.jwks.key(ctx, t)
	}
}

// Verify returns the token's user id, jobs.ErrInvalidToken, or
// jobs.ErrUnavailable when the project's keys cannot be fetched.
func (l *Local) Verify(ctx context.Context, token string) (userID string, err error) {
	p, err := l.check(ctx, token)
	if errors.Is(err, jobs.ErrUnavailable) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", jobs.ErrInvalidToken, err)
	}
	if p.user == "" {
		return "", fmt.Errorf("%w: not a user's session (audience, subject and expiry)", jobs.ErrInvalidToken)
	}
	return p.user, nil
}

// ServiceRole tells whether token is signed by the project and carries the
// role service_role (a service-role key that is a JWT): no audience or
// subject is asked of it, and an expiry only if it has one.
//
// It waits for no fetch of the JWKS: the request's Verify, which follows
// when this says no, fetches what it needs, under the request's context,
// so a token of a key not fetched yet costs one wait, not two.
func (l *Local) ServiceRole(token string) bool {
	p, err := l.check(context.WithValue(context.Background(), noFetch{}, true), token)
	return err == nil && p.service
}

// leeway is the clock skew allowed with the auth server.
const leeway = 5 * time.Second

// check returns what token proves: kept from an earlier check until it
// expires, or parsed and verified now.
func (l *Local) check(ctx context.Context, token string) (proven, error) {
	now := l.now()
	if p, ok := l.checked.get(token, now); ok && (p.kid == "" || l.jwks.listed(p.kid)) {
		return p, nil
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(token, claims, l.key(ctx),
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256", "EdDSA"}), jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return proven{}, err
	}
	role, _ := claims["role"].(string)
	p, until := proven{service: role == "service_role"}, now.Add(serviceTokenKept)
	if tok.Method.Alg() != jwt.SigningMethodHS256.Alg() {
		p.kid, _ = tok.Header["kid"].(string)
	}
	exp, _ := claims.GetExpirationTime()
	if exp != nil {
		until = exp.Add(leeway)
	}
	aud, _ := claims.GetAudience()
	if sub, _ := claims.GetSubject(); sub != "" && exp != nil && slices.Contains(aud, "authenticated") {
		p.user = sub
	}
	l.checked.put(token, p, until, now)
	return p, nil
}
