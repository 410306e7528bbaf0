package privacy_test

import (
	"testing"

	"github.com/runops/runops/internal/privacy"
)

// Find never panics, and returns spans inside the text, in order, none
// overlapping, whatever the text (gitleaks' rules run on it too: a panic
// there would take the worker down).
func FuzzFind(f *testing.F) {
	for _, s := range []string{"Password: hunter2Xy!", "\n\nkey=\n" + jwt, "(" + ghp + ").", pemBody, "a@b.co\n\n\n", "Bearer \n" + bearer} {
		f.Add(s)
	}
	d, err := privacy.NewDetector(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		last := 0
		for _, m := range d.Find(s) {
			if m.Start < last || m.End <= m.Start || m.End > len(s) {
				t.Fatalf("span %d:%d after %d in %d bytes", m.Start, m.End, last, len(s))
			}
			last = m.End
		}
		r := privacy.NewRedactor(d, []privacy.Mark{{Value: "Zoë Núñez", Kind: privacy.Name}})
		_ = r.Text(s)
	})
}
