package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != DefaultDatabaseURL || c.ListenDatabaseURL != DefaultDatabaseURL ||
		c.SupabaseURL != DefaultSupabaseURL || c.SupabasePublicURL != DefaultSupabaseURL ||
		c.Addr != ":8080" || !c.Listen || c.RequireAuth || c.MaxAttempts != 3 ||
		c.LeaseTTL != 30*time.Second || c.Heartbeat != 10*time.Second || c.Sweep != 15*time.Second ||
		c.RateLimit != (RateLimit{60, time.Minute}) || c.WorkerConcurrency < 1 || c.ReadTimeout != 10*time.Second ||
		!c.Redact || c.RedactPatterns != nil || c.Listeners != (Listeners{Max: 16, Share: 0.66}) {
		t.Fatalf("%+v", c)
	}
	if err := c.RequireServiceKey(); err == nil || !strings.Contains(err.Error(), "SUPABASE_SERVICE_ROLE_KEY") {
		t.Fatalf("service key required: %v", err)
	}
}

func TestSupabaseStatusNamesAndAliases(t *testing.T) {
	// What `supabase status -o env` prints.
	c, err := Load(env(map[string]string{
		"API_URL": "http://127.0.0.1:54321", "DB_URL": "postgresql://postgres:postgres@127.0.0.1:54322/postgres",
		"SERVICE_ROLE_KEY": "svc", "PORT": "3001",
	}))
	if err != nil || c.ServiceRoleKey != "svc" || c.Addr != ":3001" || c.RequireServiceKey() != nil {
		t.Fatalf("%+v %v", c, err)
	}
	c, _ = Load(env(map[string]string{
		"SUPABASE_URL": "http://kong:8000", "NEXT_PUBLIC_SUPABASE_URL": "https://proj.supabase.co",
		"RUNOPS_ADDR": "127.0.0.1:9000", "PORT": "3001",
	}))
	if c.SupabaseURL != "http://kong:8000" || c.SupabasePublicURL != "https://proj.supabase.co" || c.Addr != "127.0.0.1:9000" {
		t.Fatalf("%+v", c)
	}
	c, _ = Load(env(map[string]string{"SUPABASE_URL": "http://kong:8000", "SUPABASE_PUBLIC_URL": "https://pub.example"}))
	if c.SupabasePublicURL != "https://pub.example" {
		t.Fatal(c.SupabasePublicURL)
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	_, err := Load(env(map[string]string{
		"DATABASE_URL": "mysql://x", "SUPABASE_URL": "localhost:54321", "RUNOPS_RATE_LIMIT": "lots",
		"RUNOPS_LEASE_TTL": "soon", "RUNOPS_MAX_ATTEMPTS": "0", "RUNOPS_TRUSTED_PROXIES": "10.0.0.0/8,nope",
		"RUNOPS_REQUIRE_AUTH": "maybe", "RUNOPS_LISTEN": "sometimes", "RUNOPS_FRONTEND_URL": "ftp://x",
		"RUNOPS_REDACT": "partly", "RUNOPS_REDACT_PATTERNS": `CUST-\d{6};(unclosed`, "RUNOPS_LISTENERS": "most",
	}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, name := range []string{"DATABASE_URL", "SUPABASE_URL", "RUNOPS_RATE_LIMIT", "RUNOPS_LEASE_TTL",
		"RUNOPS_MAX_ATTEMPTS", "RUNOPS_TRUSTED_PROXIES", "RUNOPS_REQUIRE_AUTH", "RUNOPS_LISTEN", "RUNOPS_FRONTEND_URL",
		"RUNOPS_REDACT", "RUNOPS_REDACT_PATTERNS", "RUNOPS_LISTENERS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
	// A heartbeat must let the next renewal go out well before the run
	// stops itself (0.8 × the lease): 25 s with a lease of 30 s was
	// accepted, and every run longer than 24 s stopped before its first
	// renewal.
	for _, hb := range []string{"40s", "25s", "12001ms"} {
		if _, err := Load(env(map[string]string{"RUNOPS_HEARTBEAT": hb})); err == nil || !strings.Contains(err.Error(), "RUNOPS_HEARTBEAT") {
			t.Fatalf("heartbeat %s with a lease of 30s: %v", hb, err)
		}
	}
	if c, err := Load(env(map[string]string{"RUNOPS_HEARTBEAT": "12s"})); err != nil || c.Heartbeat != 12*time.Second {
		t.Fatalf("heartbeat 12s with a lease of 30s: %v", err)
	}
	if _, err := Load(env(map[string]string{"RUNOPS_READ_TIMEOUT": "16s"})); err == nil || !strings.Contains(err.Error(), "RUNOPS_READ_TIMEOUT") {
		t.Fatalf("read timeout over 15 s: %v", err)
	}
	if c, err := Load(env(map[string]string{"RUNOPS_READ_TIMEOUT": "15s"})); err != nil || c.ReadTimeout != 15*time.Second {
		t.Fatalf("read timeout of 15 s: %v", err)
	}
	// The heartbeat's default follows the lease: a third of it.
	if c, err := Load(env(map[string]string{"RUNOPS_LEASE_TTL": "90s"})); err != nil || c.Heartbeat != 30*time.Second {
		t.Fatalf("heartbeat of a 90 s lease: %v %v", c.Heartbeat, err)
	}
	c, err := Load(env(map[string]string{"RUNOPS_REDACT": "off", "RUNOPS_REDACT_PATTERNS": `CUST-\d{6}; [a-z]+\.corp\.internal`}))
	if err != nil || c.Redact || strings.Join(c.RedactPatterns, "|") != `CUST-\d{6}|[a-z]+\.corp\.internal` {
		t.Fatalf("redaction off, two patterns: %+v %v", c.RedactPatterns, err)
	}
}

func TestRateLimitAndProxies(t *testing.T) {
	for in, want := range map[string]RateLimit{"10/s": {10, time.Second}, "5/10m": {5, 10 * time.Minute},
		"100/hour": {100, time.Hour}, "off": {}, "0": {}} {
		c, err := Load(env(map[string]string{"RUNOPS_RATE_LIMIT": in}))
		if err != nil || c.RateLimit != want {
			t.Errorf("%q → %+v %v", in, c.RateLimit, err)
		}
	}
	c, err := Load(env(map[string]string{"RUNOPS_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1 ,::1", "RUNOPS_CORS_ORIGINS": "https://a.example,http://b:3000"}))
	if err != nil || len(c.TrustedProxies) != 3 || c.TrustedProxies[1].String() != "127.0.0.1/32" || len(c.CORSOrigins) != 2 {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestListeners(t *testing.T) {
	for v, want := range map[string]Listeners{"12": {Max: 12}, "0": {Max: 0}, "50%": {Max: -1, Share: 0.5}, "100%": {Max: -1, Share: 1}} {
		c, err := Load(env(map[string]string{"RUNOPS_LISTENERS": v}))
		if err != nil || c.Listeners != want {
			t.Errorf("%s: %+v %v", v, c.Listeners, err)
		}
	}
	for _, v := range []string{"-1", "120%", "0%", "half", "1.5"} {
		if _, err := Load(env(map[string]string{"RUNOPS_LISTENERS": v})); err == nil || !strings.Contains(err.Error(), "RUNOPS_LISTENERS") {
			t.Errorf("%s accepted: %v", v, err)
		}
	}
}

// The engine's clocks refuse values too short to tick by, a share of
// listeners that is no number, and more jobs at once than a process can
// hold connections for: each by name.
func TestValuesItCannotRunWith(t *testing.T) {
	for name, v := range map[string]string{"RUNOPS_LEASE_TTL": "1ns", "RUNOPS_SWEEP": "1ns", "RUNOPS_HEARTBEAT": "10ms"} {
		if _, err := Load(env(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "at least") {
			t.Errorf("%s=%s: %v", name, v, err)
		}
	}
	for name, v := range map[string]string{"RUNOPS_LISTENERS": "NaN%", "RUNOPS_WORKER_CONCURRENCY": "1000000000", "SUPABASE_URL": "http://127.0.0.1:99999"} {
		if _, err := Load(env(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v", name, v, err)
		}
	}
	if _, err := Load(env(map[string]string{"RUNOPS_LEASE_TTL": "2s", "RUNOPS_HEARTBEAT": "300ms", "RUNOPS_SWEEP": "500ms"})); err != nil {
		t.Errorf("the tests' clocks: %v", err)
	}
}

// A receiver listed twice is refused at start, by name and by place, never
// showing the URL (it may hold a password or a token).
func TestAWebhookURLListedTwice(t *testing.T) {
	const u = "https://ops:s3cretpw@hooks.example/runops?token=tok_live_abc123"
	_, err := Load(env(map[string]string{"RUNOPS_WEBHOOK_URLS": "https://other.example/x, " + u + ", " + u,
		"RUNOPS_WEBHOOK_SECRET": "whsec_Dn/4azeLajvmbbOiXpCwXowRhY8imR8mP4CDd5Z+BEA="}))
	if err == nil || !strings.Contains(err.Error(), "RUNOPS_WEBHOOK_URLS") || !strings.Contains(err.Error(), "entry 3 repeats entry 2") {
		t.Fatalf("%v", err)
	}
	if strings.Contains(err.Error(), "s3cretpw") || strings.Contains(err.Error(), "tok_live") {
		t.Fatalf("the message shows the URL's secrets: %v", err)
	}
}

// RUNOPS_WEBHOOK_SECRET is whsec_<base64>, two space-separated while
// rotating; any other shape refuses to start with how to make one, and
// never repeats the value.
func TestWebhookSecret(t *testing.T) {
	const a, b = "whsec_Dn/4azeLajvmbbOiXpCwXowRhY8imR8mP4CDd5Z+BEA=", "whsec_QrLIp9s/4vMQrMVe758REXrj78W3Lv0V27uRT0uboMs="
	c, err := Load(env(map[string]string{"RUNOPS_WEBHOOK_URLS": "https://hooks.example/runops", "RUNOPS_WEBHOOK_SECRET": a}))
	if err != nil || len(c.WebhookKeys) != 1 || len(c.WebhookKeys[0]) != 32 {
		t.Fatalf("one secret: %d keys, %v", len(c.WebhookKeys), err)
	}
	c, err = Load(env(map[string]string{"RUNOPS_WEBHOOK_URLS": "https://hooks.example/runops", "RUNOPS_WEBHOOK_SECRET": a + " " + b}))
	if err != nil || len(c.WebhookKeys) != 2 || string(c.WebhookKeys[0]) == string(c.WebhookKeys[1]) {
		t.Fatalf("rotating: %d keys, %v", len(c.WebhookKeys), err)
	}
	for _, secret := range []string{"s3cret-of-a-dozen-words", "whsec_c2hvcnQ=", a + " s3cret-of-a-dozen-words", ""} {
		_, err := Load(env(map[string]string{"RUNOPS_WEBHOOK_URLS": "https://hooks.example/runops", "RUNOPS_WEBHOOK_SECRET": secret}))
		if err == nil || !strings.Contains(err.Error(), "RUNOPS_WEBHOOK_SECRET") || !strings.Contains(err.Error(), "openssl rand -base64 32") ||
			!strings.Contains(err.Error(), "whsec_") {
			t.Errorf("%q: %v", secret, err)
			continue
		}
		if secret != "" && strings.Contains(err.Error(), strings.Fields(secret)[len(strings.Fields(secret))-1]) {
			t.Errorf("the error repeats the secret: %v", err)
		}
	}
	// A secret of the wrong shape refuses to start even without URLs.
	if _, err := Load(env(map[string]string{"RUNOPS_WEBHOOK_SECRET": "s3cret"})); err == nil || !strings.Contains(err.Error(), "RUNOPS_WEBHOOK_SECRET") {
		t.Fatalf("a bad secret without URLs: %v", err)
	}
}

// A 429 tells the client its Retry-After in whole seconds, the window's
// length (at least 1, as openapi.json says): a window under a second would
// say "Retry-After: 0" (retry at once, and be refused again), one of
// 1500ms would say 1. So the period is whole seconds.
func TestRateLimitWindowIsWholeSeconds(t *testing.T) {
	for _, in := range []string{"5/500ms", "5/1500ms", "1/1ns"} {
		c, err := Load(env(map[string]string{"RUNOPS_RATE_LIMIT": in}))
		if err == nil || !strings.Contains(err.Error(), "RUNOPS_RATE_LIMIT") {
			t.Errorf("%q accepted: %+v", in, c.RateLimit)
		}
	}
	if c, err := Load(env(map[string]string{"RUNOPS_RATE_LIMIT": "5/2s"})); err != nil || c.RateLimit != (RateLimit{5, 2 * time.Second}) {
		t.Errorf("5/2s → %+v %v", c.RateLimit, err)
	}
}
