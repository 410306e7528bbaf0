// Package config reads the service's configuration from the environment, with
// the names and defaults of docs/operations.md, and validates it at start with messages
// that name the variable. It must not open connections or start anything.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/webhook"
)

// Config is every setting of every process.
type Config struct {
	DatabaseURL       string // DATABASE_URL [SUPABASE_DB_URL, DB_URL]
	ListenDatabaseURL string // RUNOPS_LISTEN_DATABASE_URL, default DatabaseURL

	SupabaseURL       string // SUPABASE_URL [NEXT_PUBLIC_SUPABASE_URL, API_URL]
	SupabasePublicURL string // SUPABASE_PUBLIC_URL, default NEXT_PUBLIC_SUPABASE_URL, else SupabaseURL
	ServiceRoleKey    string // SUPABASE_SERVICE_ROLE_KEY [SERVICE_ROLE_KEY]; never logged

	Addr           string         // RUNOPS_ADDR (wins over PORT)
	FrontendURL    string         // RUNOPS_FRONTEND_URL
	CORSOrigins    []string       // RUNOPS_CORS_ORIGINS, comma-separated
	RequireAuth    bool           // RUNOPS_REQUIRE_AUTH
	RateLimit      RateLimit      // RUNOPS_RATE_LIMIT
	TrustedProxies []netip.Prefix // RUNOPS_TRUSTED_PROXIES, comma-separated IPs or CIDRs
	ReadTimeout    time.Duration  // RUNOPS_READ_TIMEOUT: a whole request must arrive within it

	WorkerConcurrency int           // RUNOPS_WORKER_CONCURRENCY
	OwnerConcurrency  int           // RUNOPS_OWNER_CONCURRENCY: one owner's jobs processing across the fleet; 0 = no cap
	LeaseTTL          time.Duration // RUNOPS_LEASE_TTL
	Heartbeat         time.Duration // RUNOPS_HEARTBEAT
	Sweep             time.Duration // RUNOPS_SWEEP
	MaxAttempts       int           // RUNOPS_MAX_ATTEMPTS
	ShutdownGrace     time.Duration // RUNOPS_SHUTDOWN_GRACE
	Listen            bool          // RUNOPS_LISTEN (on|off)
	Listeners         Listeners     // RUNOPS_LISTENERS: how many workers may LISTEN at once
	TmpDir            string        // RUNOPS_TMPDIR
	FFmpegTimeout     time.Duration // RUNOPS_FFMPEG_TIMEOUT
	RawRetention      time.Duration // RUNOPS_RAW_RETENTION: uploads deleted this long after their job ended
	SlimRetention     time.Duration // RUNOPS_SLIM_RETENTION: slim copies likewise; 0 = kept
	Redact            bool          // RUNOPS_REDACT (on|off): sensitive values kept out of SOPs and screenshots
	RedactPatterns    []string      // RUNOPS_REDACT_PATTERNS: an operator's own regular expressions, ;-separated

	WebhookURLs []string // RUNOPS_WEBHOOK_URLS, comma-separated: completion webhooks
	// WebhookKeys sign them: RUNOPS_WEBHOOK_SECRET, whsec_<base64>, two
	// or more space-separated while rotating, decoded (never logged).
	WebhookKeys [][]byte

	JWTSecret string // SUPABASE_JWT_SECRET [JWT_SECRET]: verify HS256 user tokens locally
	JWKSURL   string // SUPABASE_JWKS_URL: verify asymmetric user tokens locally

	GeminiAPIKey            string        // GEMINI_API_KEY [GOOGLE_API_KEY, GOOGLE_GEMINI_API_KEY]
	GeminiModel             string        // GEMINI_MODEL
	GeminiMediaResolution   string        // GEMINI_MEDIA_RESOLUTION
	GeminiFileActiveTimeout time.Duration // GEMINI_FILE_ACTIVE_TIMEOUT
	GeminiMaxRetryWait      time.Duration // GEMINI_MAX_RETRY_WAIT
	GeminiBaseURL           string        // GOOGLE_GEMINI_BASE_URL (the SDK's own override)
}

// Listeners caps the worker processes that hold a direct LISTEN connection
// at once: Max of them (negative: no such cap) and Share of the connection
// limit PostgreSQL gives the database role (0: no such cap), whichever is
// smaller (docs/operations.md, "Deploying a fleet").
type Listeners struct {
	Max   int
	Share float64
}

// DefaultListeners are 16 listening workers, or two thirds of the role's
// connection limit when that is fewer: more listeners made pickups no
// faster and every notification costlier (BenchmarkFleet), and the share
// leaves at least a third of the role's connections to the pooler.
var DefaultListeners = Listeners{Max: 16, Share: 0.66}

// RateLimit is N requests per Window per client; zero Requests = off.
type RateLimit struct {
	Requests int
	Window   time.Duration
}

// Defaults, as docs/operations.md lists them.
const (
	DefaultDatabaseURL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
	DefaultSupabaseURL = "http://127.0.0.1:54321"
	DefaultAddr        = ":8080"
	DefaultGeminiModel = "gemini-2.5-flash"
	MaxReadTimeout     = 15 * time.Second
)

// Load reads the configuration through getenv (os.Getenv in production) and
// reports every bad value at once.
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	c := Config{
		DatabaseURL:       r.first(DefaultDatabaseURL, "DATABASE_URL", "SUPABASE_DB_URL", "DB_URL"),
		SupabaseURL:       r.first(DefaultSupabaseURL, "SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "API_URL"),
		ServiceRoleKey:    r.first("", "SUPABASE_SERVICE_ROLE_KEY", "SERVICE_ROLE_KEY"),
		FrontendURL:       r.first("", "RUNOPS_FRONTEND_URL"),
		CORSOrigins:       list(r.first("", "RUNOPS_CORS_ORIGINS")),
		RequireAuth:       r.boolean("RUNOPS_REQUIRE_AUTH", false),
		WorkerConcurrency: r.integer("RUNOPS_WORKER_CONCURRENCY", max(1, runtime.GOMAXPROCS(0)/2), 1, maxWorkerConcurrency),
		OwnerConcurrency:  r.integer("RUNOPS_OWNER_CONCURRENCY", 0, 1, 0),
		LeaseTTL:          r.durationAtLeast("RUNOPS_LEASE_TTL", queue.DefaultLeaseTTL, time.Second),
		Sweep:             r.durationAtLeast("RUNOPS_SWEEP", queue.DefaultSweep, 100*time.Millisecond),
		MaxAttempts:       r.integer("RUNOPS_MAX_ATTEMPTS", queue.DefaultMaxAttempts, 1, 0),
		ShutdownGrace:     r.duration("RUNOPS_SHUTDOWN_GRACE", queue.DefaultShutdownGrace),
		ReadTimeout:       r.duration("RUNOPS_READ_TIMEOUT", 10*time.Second),
		TmpDir:            r.first("", "RUNOPS_TMPDIR"),
		FFmpegTimeout:     r.duration("RUNOPS_FFMPEG_TIMEOUT", pipeline.DefaultFFmpegTimeout),
		RawRetention:      r.duration("RUNOPS_RAW_RETENTION", 24*time.Hour),
		SlimRetention:     r.duration("RUNOPS_SLIM_RETENTION", 0),
		Redact:            r.onOff("RUNOPS_REDACT", true),

		WebhookURLs:             list(r.first("", "RUNOPS_WEBHOOK_URLS")),
		JWTSecret:               r.first("", "SUPABASE_JWT_SECRET", "JWT_SECRET"),
		JWKSURL:                 r.first("", "SUPABASE_JWKS_URL"),
		GeminiAPIKey:            r.first("", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_API_KEY"),
		GeminiModel:             r.first(DefaultGeminiModel, "GEMINI_MODEL"),
		GeminiMediaResolution:   r.first("", "GEMINI_MEDIA_RESOLUTION"),
		GeminiFileActiveTimeout: r.duration("GEMINI_FILE_ACTIVE_TIMEOUT", pipeline.DefaultFileActiveTimeout),
		GeminiMaxRetryWait:      r.duration("GEMINI_MAX_RETRY_WAIT", pipeline.DefaultMaxRetryWait),
		GeminiBaseURL:           r.first("", "GOOGLE_GEMINI_BASE_URL"),
	}
	c.Heartbeat = r.durationAtLeast("RUNOPS_HEARTBEAT", queue.DefaultHeartbeat(c.LeaseTTL), 100*time.Millisecond)
	c.ListenDatabaseURL = r.first(c.DatabaseURL, "RUNOPS_LISTEN_DATABASE_URL")
	c.SupabasePublicURL = r.first(c.SupabaseURL, "SUPABASE_PUBLIC_URL", "NEXT_PUBLIC_SUPABASE_URL")
	c.Addr = r.first("", "RUNOPS_ADDR")
	if c.Addr == "" {
		c.Addr = DefaultAddr
		if p := r.first("", "PORT"); p != "" {
			c.Addr = ":" + p
		}
	}
	c.Listen = r.onOff("RUNOPS_LISTEN", true)
	c.Listeners = r.listeners("RUNOPS_LISTENERS")
	if p := r.first("", "RUNOPS_REDACT_PATTERNS"); p != "" {
		patterns, err := privacy.ParsePatterns(p)
		if err != nil {
			r.fail("RUNOPS_REDACT_PATTERNS", "has a bad regular expression (RE2 syntax, ;-separated): %v", err)
		}
		c.RedactPatterns = patterns
	}
	c.RateLimit = r.rateLimit("RUNOPS_RATE_LIMIT", "60/min")
	for _, p := range list(r.first("", "RUNOPS_TRUSTED_PROXIES")) {
		prefix, err := parsePrefix(p)
		if err != nil {
			r.fail("RUNOPS_TRUSTED_PROXIES", "%q is not an IP address or CIDR", p)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix)
	}
	r.urls(&c)
	c.WebhookKeys = r.webhookKeys("RUNOPS_WEBHOOK_SECRET", len(c.WebhookURLs) > 0)
	if c.ReadTimeout > MaxReadTimeout {
		r.fail("RUNOPS_READ_TIMEOUT", "(%s) must be at most %s: API bodies are small, and a slow body holds a connection", c.ReadTimeout, MaxReadTimeout)
	}
	if c.Heartbeat > queue.MaxHeartbeat(c.LeaseTTL) {
		r.fail("RUNOPS_HEARTBEAT", "(%s) must be at most %s, two fifths of RUNOPS_LEASE_TTL (%s): a run stops itself %s after its last renewal, and the next renewal, with its retries, must fit well within that", c.Heartbeat, queue.MaxHeartbeat(c.LeaseTTL), c.LeaseTTL, queue.StopMargin(c.LeaseTTL))
	}
	return c, errors.Join(r.errs...)
}

// RequireServiceKey checks the key every serving process needs: the API and
// the worker both call storage as the service role.
func (c Config) RequireServiceKey() error {
	if c.ServiceRoleKey == "" {
		return errors.New("SUPABASE_SERVICE_ROLE_KEY is required (or SERVICE_ROLE_KEY, as `supabase status -o env` prints it)")
	}
	return nil
}

// RequireWorker checks what a worker needs: without a Gemini key it would
// claim jobs it cannot finish.
func (c Config) RequireWorker() error { return c.RequireGemini("to run the worker") }

// RequireGemini checks that a Gemini key is set; purpose says what the user
// ran, for the sentence ("to turn a recording into an SOP").
func (c Config) RequireGemini(purpose string) error {
	if c.GeminiAPIKey == "" {
		return errors.New("GEMINI_API_KEY is required " + purpose + ": set it to a Gemini API key " +
			"(https://aistudio.google.com/apikey); GOOGLE_API_KEY or GOOGLE_GEMINI_API_KEY work too")
	}
	return nil
}

// onOff reads a switch: on, true or 1; off, false or 0.
func (r *reader) onOff(name string, def bool) bool {
	v := strings.ToLower(r.first("", name))
	switch v {
	case "":
		return def
	case "on", "true", "1":
		return true
	case "off", "false", "0":
		return false
	}
	r.fail(name, "must be on or off, not %q", v)
	return def
}

// makeSecret is how to make a webhook secret, for the sentences of
// RUNOPS_WEBHOOK_SECRET's errors.
const makeSecret = "make one with `echo whsec_$(openssl rand -base64 32)` " +
	"(whsec_ followed by the base64 of 24 to 64 random bytes; two such values, space-separated, while rotating)"

// webhookKeys reads the webhook secrets (required when webhooks are sent)
// and returns their signing keys.
func (r *reader) webhookKeys(name string, required bool) [][]byte {
	v := r.first("", name)
	if v == "" {
		if required {
			r.fail(name, "is required with RUNOPS_WEBHOOK_URLS: receivers check the signature; %s", makeSecret)
		}
		return nil
	}
	keys, err := webhook.ParseSecrets(v)
	if err != nil {
		r.fail(name, "%v; %s", err, makeSecret)
		return nil
	}
	return keys
}

type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s %s", name, fmt.Sprintf(format, args...)))
}

// first returns the first non-empty of names, else def.
func (r *reader) first(def string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(r.getenv(n)); v != "" {
			return v
		}
	}
	return def
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.first("", name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(name, "must be a positive duration such as 30s or 2m, not %q", v)
		return def
	}
	return d
}

// urls checks every URL of c, each under its variable's name.
func (r *reader) urls(c *Config) {
	r.url("DATABASE_URL", c.DatabaseURL, "postgres", "postgresql")
	r.url("RUNOPS_LISTEN_DATABASE_URL", c.ListenDatabaseURL, "postgres", "postgresql")
	r.url("SUPABASE_URL", c.SupabaseURL, "http", "https")
	r.url("SUPABASE_PUBLIC_URL", c.SupabasePublicURL, "http", "https")
	for _, o := range [][2]string{{"RUNOPS_FRONTEND_URL", c.FrontendURL}, {"SUPABASE_JWKS_URL", c.JWKSURL},
		{"GOOGLE_GEMINI_BASE_URL", c.GeminiBaseURL}} { // optional
		if o[1] != "" {
			r.url(o[0], o[1], "http", "https")
		}
	}
	for i, u := range c.WebhookURLs {
		r.url("RUNOPS_WEBHOOK_URLS", u, "http", "https")
		if j := slices.Index(c.WebhookURLs[:i], u); j >= 0 { // by place: a URL may hold a secret
			r.fail("RUNOPS_WEBHOOK_URLS", "entry %d repeats entry %d: list each receiver once", i+1, j+1)
		}
	}
	for _, o := range c.CORSOrigins {
		if o != "*" {
			r.url("RUNOPS_CORS_ORIGINS", o, "http", "https")
		}
	}
}

// maxWorkerConcurrency bounds the jobs one process runs at once: each takes
// up to three database connections, a share of the disk and an ffmpeg.
const maxWorkerConcurrency = 1000

// durationAtLeast is duration, refusing a value under least: the engine's
// clocks tick at fractions of it (a lease of 1ns made a worker panic; a
// sweep of 1ns sent the database thousands of statements a second).
func (r *reader) durationAtLeast(name string, def, least time.Duration) time.Duration {
	d := r.duration(name, def)
	if d < least {
		r.fail(name, "must be at least %s, not %s", least, d)
		return def
	}
	return d
}

// integer reads a whole number from minimum to maximum (0: no maximum).
func (r *reader) integer(name string, def, minimum, maximum int) int {
	v := r.first("", name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil || n < minimum:
		r.fail(name, "must be a whole number ≥ %d, not %q", minimum, v)
		return def
	case maximum > 0 && n > maximum:
		r.fail(name, "must be at most %d, not %d", maximum, n)
		return def
	}
	return n
}

// listeners reads N or P% (of the role's connection limit).
func (r *reader) listeners(name string) Listeners {
	v := r.first("", name)
	if v == "" {
		return DefaultListeners
	}
	if p, ok := strings.CutSuffix(v, "%"); ok {
		pct, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(pct > 0 && pct <= 100) { // NaN too
			r.fail(name, "%q is not a share of the database role's connection limit above 0%% and up to 100%%", v)
			return DefaultListeners
		}
		return Listeners{Max: -1, Share: pct / 100}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		r.fail(name, "%q is neither a number of worker processes (0 or more) nor a share like 66%%", v)
		return DefaultListeners
	}
	return Listeners{Max: n}
}

func (r *reader) boolean(name string, def bool) bool {
	v := r.first("", name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "must be true or false, not %q", v)
		return def
	}
	return b
}

func (r *reader) url(name, v string, schemes ...string) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		r.fail(name, "must be an absolute URL (%s://…)", schemes[0])
		return
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			r.fail(name, "names port %s, which no server listens on (1 to 65535)", p)
			return
		}
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return
		}
	}
	r.fail(name, "must use %s, not %q", strings.Join(schemes, " or "), u.Scheme)
}

// rateLimit parses "60/min", "10/s", "1000/1h"; "off" or "0" disables it.
func (r *reader) rateLimit(name, def string) RateLimit {
	v := strings.ToLower(r.first(def, name))
	if v == "off" || v == "0" {
		return RateLimit{}
	}
	n, unit, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || count < 1 {
		r.fail(name, "must look like 60/min, 10/s or off, not %q", v)
		return RateLimit{}
	}
	windows := map[string]time.Duration{"s": time.Second, "sec": time.Second, "second": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "h": time.Hour, "hour": time.Hour}
	w, ok := windows[strings.TrimSpace(unit)]
	if !ok {
		if w, err = time.ParseDuration(strings.TrimSpace(unit)); err != nil || w <= 0 {
			r.fail(name, "has an unknown period %q (use s, min, h or a duration such as 10m)", unit)
			return RateLimit{}
		}
	}
	if w < time.Second || w%time.Second != 0 {
		// A 429's Retry-After is the window in whole seconds.
		r.fail(name, "has a period of %v; it must be whole seconds (such as 10s, 1min)", w)
		return RateLimit{}
	}
	return RateLimit{Requests: count, Window: w}
}

func list(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
