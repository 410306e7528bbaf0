package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/supabasetest"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	v, err := auth.New(fake.URL, fake.ServiceRoleKey(), 5*time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := fake.UserToken("3f2504e0-4f89-41d3-9a0c-0305e82c3301", time.Hour)
	u, err := v.Verify(ctx, tok)
	if err != nil || u != "3f2504e0-4f89-41d3-9a0c-0305e82c3301" {
		t.Fatalf("good token: %+v %v", u, err)
	}
	// Cached: no second call to the auth server.
	if _, err := v.Verify(ctx, tok); err != nil || fake.Calls(supabasetest.OpAuthUser) != 1 {
		t.Fatalf("cache: %v, %d calls", err, fake.Calls(supabasetest.OpAuthUser))
	}
	for name, bad := range map[string]string{
		"expired":   fake.UserToken("u", -time.Minute),
		"garbage":   "not-a-jwt",
		"anon key":  fake.AnonKey(),
		"forged":    tok[:len(tok)-4] + "AAAA",
		"empty sub": "",
	} {
		if _, err := v.Verify(ctx, bad); !errors.Is(err, jobs.ErrInvalidToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// An outage is not an invalid token, and is not cached.
	other := fake.UserToken("6ba7b810-9dad-41d1-80b4-00c04fd430c8", time.Hour)
	fake.FailNext(supabasetest.OpAuthUser, 1, 500)
	fake.SetDown(true)
	if _, err := v.Verify(ctx, other); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("down: %v", err)
	}
	fake.SetDown(false)
	if _, err := v.Verify(ctx, other); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("500: %v", err)
	}
	if u, err := v.Verify(ctx, other); err != nil || u != "6ba7b810-9dad-41d1-80b4-00c04fd430c8" {
		t.Fatalf("back: %+v %v", u, err)
	}
}
