package privacy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/runops/runops/internal/sop"
)

// Source is where a redacted value was found, for metadata.privacy.
type Source string

// The sources of redacted values.
const (
	FromText    Source = "text"    // the built-in detectors, in the SOP's text
	FromPattern Source = "pattern" // RUNOPS_REDACT_PATTERNS
	FromModel   Source = "model"   // values the model marked
	FromOCR     Source = "ocr"     // read on a screenshot
)

// variablePrefix names the variables of each kind: {{EMAIL_1}}.
var variablePrefix = map[Kind]string{
	Email: "EMAIL", Card: "CARD_NUMBER", IBAN: "IBAN", APIKey: "API_KEY", AccessKey: "ACCESS_KEY",
	Token: "TOKEN", PrivateKey: "PRIVATE_KEY", Password: "PASSWORD", Custom: "VALUE",
	Name: "NAME", Address: "ADDRESS", Phone: "PHONE", Secret: "SECRET",
}

// description tells a person what to fill in, never the value nor any part
// of it.
var description = map[Kind]string{
	Email:      "An e-mail address, hidden from the recording: fill in the one to use.",
	Card:       "A payment card number, hidden from the recording: fill in the card to use.",
	IBAN:       "A bank account number (IBAN), hidden from the recording: fill in the account to use.",
	APIKey:     "An API key, hidden from the recording: use your own key, from the service's settings.",
	AccessKey:  "A cloud access key id, hidden from the recording: use your own credentials.",
	Token:      "An access token or secret, hidden from the recording: use your own.",
	PrivateKey: "A private key, hidden from the recording: use your own.",
	Password:   "A password, hidden from the recording: use your own.",
	Custom:     "A value your organisation keeps private, hidden from the recording: fill in the one to use.",
	Name:       "A person's name, hidden from the recording: fill in the one to use.",
	Address:    "A postal address, hidden from the recording: fill in the one to use.",
	Phone:      "A phone number, hidden from the recording: fill in the one to use.",
	Secret:     "A personal or secret value, hidden from the recording: fill in the one to use.",
}

// Mark is a value the model marked as personal or secret.
type Mark struct {
	Value string
	Kind  Kind
}

// minMarked is the shortest marked value replaced: shorter ones ("Al",
// "12") would take parts of ordinary words with them.
const minMarked = 3

// Redactor replaces the sensitive values of one SOP with variables: each
// distinct value gets one name, used wherever it appears. Not safe for
// concurrent use but for Boxes.
type Redactor struct {
	det     *Detector
	marks   []Mark
	markRe  *regexp.Regexp
	vars    map[string]string // normalised value → variable name
	kinds   map[string]Kind   // variable name → kind
	order   []string          // variable names, as assigned
	taken   map[string]bool   // names in use, ours and the document's
	counts  map[Kind]int
	sources map[Source]int
	values  []string        // the values found, for the screenshots' OCR
	seen    map[string]bool // values found only on screenshots, counted once
	mu      sync.Mutex      // Boxes may be called from several goroutines
}

// NewRedactor returns a redactor over det that also replaces marks.
func NewRedactor(det *Detector, marks []Mark) *Redactor {
	r := &Redactor{det: det, vars: map[string]string{}, kinds: map[string]Kind{}, taken: map[string]bool{},
		counts: map[Kind]int{}, sources: map[Source]int{}, seen: map[string]bool{}}
	for _, m := range marks {
		v := strings.TrimSpace(m.Value)
		if len([]rune(v)) < minMarked || !slices.Contains(ModelKinds, m.Kind) {
			continue
		}
		r.marks = append(r.marks, Mark{v, m.Kind})
	}
	// Longest first, so "Jane Doe" goes before "Jane"; whole words only
	// ("Jan" is not taken out of "January").
	slices.SortStableFunc(r.marks, func(a, b Mark) int { return len(b.Value) - len(a.Value) })
	var alts []string
	for _, m := range r.marks {
		alt := regexp.QuoteMeta(m.Value)
		if isWord(m.Value[0]) {
			alt = `\b` + alt
		}
		if isWord(m.Value[len(m.Value)-1]) {
			alt += `\b`
		}
		alts = append(alts, alt)
	}
	if len(alts) > 0 {
		r.markRe = regexp.MustCompile(`(?i)(?:` + strings.Join(alts, "|") + `)`)
	}
	return r
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// Reserve tells the redactor names the document already uses, so that a
// variable never takes one of them.
func (r *Redactor) Reserve(names ...string) {
	for _, n := range names {
		r.taken[n] = true
	}
}

// Text returns s with every sensitive value replaced by its variable.
func (r *Redactor) Text(s string) string { return r.text(s, FromText) }

func (r *Redactor) text(s string, src Source) string {
	if s == "" {
		return s
	}
	if r.markRe != nil {
		s = r.markRe.ReplaceAllStringFunc(s, func(v string) string {
			for _, m := range r.marks {
				if strings.EqualFold(m.Value, v) {
					return r.variable(v, m.Kind, FromModel)
				}
			}
			return v
		})
	}
	matches := r.det.Find(s)
	if len(matches) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		from := src
		if m.Kind == Custom {
			from = FromPattern
		}
		b.WriteString(s[last:m.Start])
		b.WriteString(r.variable(s[m.Start:m.End], m.Kind, from))
		last = m.End
	}
	b.WriteString(s[last:])
	return b.String()
}

// variable returns "{{NAME_n}}" for value, naming it the first time.
func (r *Redactor) variable(value string, kind Kind, src Source) string {
	key := normalise(value, kind)
	if name, ok := r.vars[key]; ok {
		return "{{" + name + "}}"
	}
	prefix := variablePrefix[kind]
	name := ""
	for n := 1; ; n++ {
		name = fmt.Sprintf("%s_%d", prefix, n)
		if !r.taken[name] {
			break
		}
	}
	r.taken[name] = true
	r.vars[key] = name
	r.kinds[name] = kind
	r.order = append(r.order, name)
	r.counts[kind]++
	r.sources[src]++
	r.values = append(r.values, value)
	return "{{" + name + "}}"
}

// normalise makes the spellings of one value one key: a card or IBAN with
// or without its spaces, an e-mail address in any case.
func normalise(v string, kind Kind) string {
	switch kind {
	case Card, IBAN:
		return string(kind) + ":" + strings.NewReplacer(" ", "", "-", "").Replace(strings.ToUpper(v))
	case Email, Name, Address:
		return string(kind) + ":" + strings.ToLower(v)
	}
	return string(kind) + ":" + v
}

// Report is metadata.privacy: distinct values per kind and per source,
// never a value.
func (r *Redactor) Report() map[string]any {
	counts, sources := map[string]any{}, map[string]any{}
	for k, n := range r.counts {
		counts[string(k)] = n
	}
	for s, n := range r.sources {
		sources[string(s)] = n
	}
	return map[string]any{"counts": counts, "sources": sources}
}

// CountOCR records a value read on a screenshot that the text had not
// named (its box is covered; it has no variable).
func (r *Redactor) CountOCR(kind Kind) {
	r.counts[kind]++
	r.sources[FromOCR]++
}

// Document replaces the sensitive values in every text of doc — what the
// viewer prints, meta, the variables' descriptions, the clarification
// requests and the private part — and lists each variable it introduced
// in public.variables with a description of what to fill in. Ids, types,
// links between nodes, timestamps and screenshot paths are structure, not
// text, and stay.
func (r *Redactor) Document(doc *sop.Document) {
	if doc.Public != nil {
		for name := range doc.Public.Variables {
			r.Reserve(name)
		}
	}
	if m := doc.Meta; m != nil {
		m.Title, m.Goal, m.Purpose, m.Version = r.Text(m.Title), r.Text(m.Goal), r.Text(m.Purpose), r.Text(m.Version)
		for i := range m.Owner {
			m.Owner[i] = r.Text(m.Owner[i])
		}
	}
	if p := doc.Public; p != nil {
		for i := range p.Triggers {
			t := &p.Triggers[i]
			t.Config, t.Description = r.Text(t.Config), r.Text(t.Description)
		}
		for i := range p.Nodes {
			n := &p.Nodes[i]
			n.Label, n.Intent, n.Context = r.Text(n.Label), r.Text(n.Intent), r.Text(n.Context)
			n.Iterator, n.ExitCondition = r.Text(n.Iterator), r.Text(n.ExitCondition)
		}
		for _, name := range slices.Sorted(maps.Keys(p.Variables)) {
			p.Variables[name] = r.Text(p.Variables[name])
		}
		for i := range p.ClarificationRequests {
			c := &p.ClarificationRequests[i]
			c.Question = r.Text(c.Question)
		}
	}
	if pr := doc.Private; pr != nil {
		for i := range pr.Skills {
			s := &pr.Skills[i]
			s.App, s.PerformanceHint = r.Text(s.App), r.Text(s.PerformanceHint)
		}
		for i, a := range pr.Artifacts {
			pr.Artifacts[i] = r.any(a)
		}
	}
	if p := doc.Public; p != nil && len(r.order) > 0 {
		if p.Variables == nil {
			p.Variables = map[string]string{}
		}
		for _, name := range r.order {
			p.Variables[name] = description[r.kinds[name]]
		}
	}
}

// any redacts every string inside a decoded JSON value.
func (r *Redactor) any(v any) any {
	switch x := v.(type) {
	case string:
		return r.Text(x)
	case []any:
		for i := range x {
			x[i] = r.any(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = r.any(e)
		}
	}
	return v
}
