package privacy_test

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/lucasjones/reggen"
	"github.com/zricethezav/gitleaks/v8/config"
	"github.com/zricethezav/gitleaks/v8/detect"

	"github.com/runops/runops/internal/privacy"
)

// The rule table is gitleaks' default configuration, byte for byte, of the
// gitleaks module go.mod requires: upgrading the module and not the table
// fails here. RUNOPS_UPDATE_RULES=1 writes it anew.
func TestTheRuleTableIsGitleaksOwn(t *testing.T) {
	t.Parallel()
	if os.Getenv("RUNOPS_UPDATE_RULES") != "" {
		if err := os.WriteFile("gitleaks.toml", []byte(config.DefaultConfig), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("gitleaks.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != config.DefaultConfig {
		t.Fatal("internal/privacy/gitleaks.toml is not the gitleaks module's default configuration: RUNOPS_UPDATE_RULES=1 go test -run RuleTable ./internal/privacy/")
	}
}

// Our detector loses nothing of the rule set: on strings generated from
// each of gitleaks' own rules, every secret gitleaks finds is inside a
// value Find returns. Inside a sentence, between the punctuation text puts
// around a value ("(…)."), Find finds nearly all of them; gitleaks alone
// misses most (its rules end a secret at a space, a quote or a line end).
func TestEveryGitleaksFindingIsFound(t *testing.T) {
	t.Parallel()
	gl, err := detect.NewDetectorDefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	d := detector(t)
	rng := rand.New(rand.NewPCG(27, 1))
	rules, secrets, ours, theirs := 0, 0, 0, 0
	for _, rule := range gl.Config.Rules {
		if rule.Regex == nil {
			continue
		}
		g, err := reggen.NewGenerator(rule.Regex.String())
		if err != nil {
			continue // a construct reggen cannot generate
		}
		g.SetSeed(rng.Int64())
		for range 20 {
			sample := g.Generate(3)
			findings := gl.DetectString(sample)
			if len(findings) == 0 {
				continue
			}
			rules++
			for _, f := range findings {
				if !covers(d, sample, f.Secret) {
					t.Errorf("rule %s: gitleaks finds %q in %q; we do not", rule.RuleID, f.Secret, sample)
				}
				sentence := "Use it (" + strings.TrimRight(sample, "\n") + ")."
				secrets++
				if covers(d, sentence, f.Secret) {
					ours++
				}
				for _, g := range gl.DetectString(sentence) {
					if strings.Contains(g.Secret, strings.TrimSpace(f.Secret)) {
						theirs++
						break
					}
				}
			}
			break
		}
	}
	t.Logf("%d of %d rules generated a sample gitleaks finds; of its %d secrets put in a sentence, we find %d, gitleaks %d",
		rules, len(gl.Config.Rules), secrets, ours, theirs)
	if rules < len(gl.Config.Rules)*9/10 {
		t.Fatalf("only %d rules tried: the comparison proves little", rules)
	}
	if ours*100 < secrets*95 || ours <= theirs {
		t.Fatalf("in a sentence we find %d of %d (gitleaks %d)", ours, secrets, theirs)
	}
}

// covers tells whether a value Find returns in text contains secret.
func covers(d *privacy.Detector, text, secret string) bool {
	for _, m := range d.Find(text) {
		if strings.Contains(text[m.Start:m.End], strings.TrimSpace(secret)) {
			return true
		}
	}
	return false
}
