package privacy

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"github.com/spf13/viper"
	"github.com/zricethezav/gitleaks/v8/detect"
	"github.com/zricethezav/gitleaks/v8/logging"
	"github.com/zricethezav/gitleaks/v8/report"
)

// RuleSet names the maintained rule set the providers' secrets are found
// with: gitleaks' default configuration (its ~220 rules: a regular
// expression, keywords that must be present, an entropy threshold and
// allowlists of example values), used as a library.
const RuleSet = "gitleaks v8.30.1 default rules"

// leaks is the gitleaks detector, made once per process (its rules take
// some tens of milliseconds to compile, and its configuration loader uses
// a global). A gitleaks Detector returns each call's findings and keeps
// none, so one serves every goroutine.
var leaks = sync.OnceValues(func() (*detect.Detector, error) {
	// gitleaks logs to stderr from its own logger; a finding's trace line
	// would carry the secret. Nothing of it is ours to print.
	logging.Logger = zerolog.Nop()
	// Loading allocates about 26 MB to keep 15: collected often meanwhile
	// (it happens once, at start), and the rest given back to the system,
	// the process's peak memory grows by less (README, worker memory).
	gc := debug.SetGCPercent(10)
	d, err := detect.NewDetectorDefaultConfig()
	debug.SetGCPercent(gc)
	viper.Reset() // its copy of the configuration is ours to drop
	debug.FreeOSMemory()
	if err != nil {
		return nil, fmt.Errorf("gitleaks rules: %w", err)
	}
	return d, nil
})

// ruleKind is the kind of a value a gitleaks rule found, from its id: the
// name of its variable, and its count in metadata.privacy.
func ruleKind(id string) Kind {
	switch {
	case strings.Contains(id, "private-key"), id == "age-secret-key", id == "pkcs12-file":
		return PrivateKey
	case id == "aws-access-token", strings.HasSuffix(id, "access-key-id"), strings.HasSuffix(id, "access-id"):
		return AccessKey
	case strings.Contains(id, "password"), id == "curl-auth-user":
		return Password
	case id == "generic-api-key":
		return Token
	case strings.Contains(id, "api-key"), strings.Contains(id, "api-token"), strings.HasSuffix(id, "-key"),
		id == "stripe-access-token": // sk_live_…: an API key
		return APIKey
	}
	return Token
}

// findLeaks returns what gitleaks' rules find in s: each secret at the place
// its rule matched, and wherever else it appears whole in s.
func findLeaks(s string) []Match {
	d, err := leaks()
	if err != nil || s == "" {
		return nil
	}
	var out []Match
	lineStarts := []int{0}
	for i := range len(s) {
		if s[i] == '\n' {
			lineStarts = append(lineStarts, i)
		}
	}
	for _, f := range d.DetectString(s) {
		secret := strings.TrimSpace(f.Secret)
		if len(secret) < 4 {
			continue
		}
		kind := ruleKind(f.RuleID)
		at := leakStart(s, lineStarts, f)
		if at >= 0 {
			if i := strings.LastIndex(s[at:min(len(s), at+len(f.Match))], secret); i >= 0 {
				out = append(out, Match{Start: at + i, End: at + i + len(secret), Kind: kind})
			}
		}
		for from := 0; ; {
			i := strings.Index(s[from:], secret)
			if i < 0 {
				break
			}
			start, end := from+i, from+i+len(secret)
			if bounded(s, start, end) {
				out = append(out, Match{Start: start, End: end, Kind: kind})
			}
			from = end
		}
	}
	return out
}

// leakStart is where the match of a gitleaks finding begins in s, or -1:
// gitleaks gives its line and 1-based column, counted from the line break
// before it (from the start of s on the first line).
func leakStart(s string, lineStarts []int, f report.Finding) int {
	if f.StartLine < 0 || f.StartLine >= len(lineStarts) {
		return -1
	}
	at := lineStarts[f.StartLine] + f.StartColumn - 1
	if at < 0 || at+len(f.Match) > len(s) || s[at:at+len(f.Match)] != f.Match {
		return -1
	}
	return at
}
