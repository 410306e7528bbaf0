package privacy

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// The thresholds of the tokens found without a provider's rule, measured:
// random tokens of the alphabets keys use pass (base64 and alphanumeric at
// 20 characters beside a secret's name, at 40 alone); identifiers made of
// English words, and hex (git SHAs) alone, do not.
func TestTokenThresholds(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(alphabet string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	words := slices.Sorted(func(yield func(string) bool) {
		for w := range everyday {
			if len(w) > 2 && !yield(w) {
				return
			}
		}
	})
	camel := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			w := []rune(words[rng.IntN(len(words))])
			w[0] = unicode.ToUpper(w[0])
			b.WriteString(string(w))
			if rng.IntN(4) == 0 {
				b.WriteByte(byte('0' + rng.IntN(10))) // a version, a count
			}
		}
		return b.String()[:n]
	}
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	share := func(n int, make func() string, keep func(string) bool) float64 {
		kept := 0
		for range n {
			if keep(make()) {
				kept++
			}
		}
		return float64(kept) / float64(n)
	}
	const n = 2000
	for name, c := range map[string]struct {
		make     func() string
		keep     func(string) bool
		min, max float64
	}{
		"base64, 20, beside a name":  {func() string { return random(b64, 20) }, highEntropy, 0.90, 1},
		"alnum, 24, beside a name":   {func() string { return random(b64[:62], 24) }, highEntropy, 0.93, 1},
		"base64, 40, alone":          {func() string { return random(b64, 40) }, veryHighEntropy, 0.95, 1},
		"CamelCase, 20, beside":      {func() string { return camel(20) }, highEntropy, 0, 0.05},
		"CamelCase, 40, alone":       {func() string { return camel(40) }, veryHighEntropy, 0, 0.05},
		"hex (a git SHA), 40, alone": {func() string { return random("0123456789abcdef", 40) }, veryHighEntropy, 0, 0},
	} {
		got := share(n, c.make, c.keep)
		t.Logf("%s: %.1f %% kept", name, 100*got)
		if got < c.min || got > c.max {
			t.Errorf("%s: %.1f %% kept; want %.0f–%.0f %%", name, 100*got, 100*c.min, 100*c.max)
		}
	}
}
