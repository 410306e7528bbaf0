package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/runops/runops/internal/jobs"
)

// Local verifies Supabase user tokens itself, with no call per request: HS256
// tokens with the project's JWT secret (SUPABASE_JWT_SECRET), tokens signed
// with the project's asymmetric keys against its JWKS (SUPABASE_JWKS_URL,
// fetched and refreshed in the background). A token must carry a valid
// signature, an expiry in the future, the audience "authenticated" and a
// subject, which is the user; the issuer is not checked.
type Local struct {
	secret []byte
	jwks   keyfunc.Keyfunc
}

// NewLocal returns a verifier with the secret, the JWKS at jwksURL, or both
// ("" for neither is an error). The JWKS is refreshed until ctx ends.
func NewLocal(ctx context.Context, secret, jwksURL string) (*Local, error) {
	l := &Local{secret: []byte(secret)}
	if jwksURL != "" {
		k, err := keyfunc.NewDefaultCtx(ctx, []string{jwksURL})
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
func (l *Local) key(t *jwt.Token) (any, error) {
	if t.Method.Alg() == jwt.SigningMethodHS256.Alg() {
		if len(l.secret) == 0 {
			return nil, errors.New("HS256 token but no SUPABASE_JWT_SECRET")
		}
		return l.secret, nil
	}
	if l.jwks == nil {
		return nil, fmt.Errorf("%s token but no SUPABASE_JWKS_URL", t.Method.Alg())
	}
	return l.jwks.Keyfunc(t)
}

// Verify returns the token's user id or jobs.ErrInvalidToken.
func (l *Local) Verify(_ context.Context, token string) (userID string, err error) {
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, l.key,
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256", "EdDSA"}),
		jwt.WithAudience("authenticated"), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second))
	if err != nil {
		return "", fmt.Errorf("%w: %w", jobs.ErrInvalidToken, err)
	}
	sub, _ := claims.GetSubject()
	if sub == "" {
		return "", fmt.Errorf("%w: no subject", jobs.ErrInvalidToken)
	}
	return sub, nil
}

// ServiceRole tells whether token is signed by the project and carries the
// role service_role (a service-role key that is a JWT): no audience or
// subject is asked of it, and an expiry only if it has one.
func (l *Local) ServiceRole(token string) bool {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, l.key,
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256", "EdDSA"}), jwt.WithLeeway(5*time.Second))
	role, _ := claims["role"].(string)
	return err == nil && role == "service_role"
}
