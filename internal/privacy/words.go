package privacy

import (
	_ "embed"
	"strings"
)

//go:embed everyday.txt
var everydayList string

// everyday is the set of everyday words (everyday.txt), lower-case.
var everyday = func() map[string]bool {
	set := map[string]bool{}
	for _, line := range strings.Split(everydayList, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, w := range strings.Fields(line) {
			set[w] = true
		}
	}
	return set
}()

// isEveryday tells whether w is an everyday word, in any case.
func isEveryday(w string) bool { return everyday[strings.ToLower(w)] }
