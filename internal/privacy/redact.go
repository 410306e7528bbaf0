package privacy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/runops/runops/internal/sop"
)

// Source is where a redacted value was found, for metadata.privacy.
type Source string

// The sources of redacted values.
const (
	FromText    Source = "text"    // the rules, in the SOP's text
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
// "12") would take parts of ordinary words with them. In scripts written
// without spaces a character is a syllable: two make a name (王伟).
const (
	minMarked    = 3
	minMarkedCJK = 2
)

// minTokenMatch is the shortest folded value looked for inside other text
// rather than word by word: shorter ones are compared as whole words.
const minTokenMatch = 6

// minDigits is the fewest digits a marked phone or card number is looked
// for by: its digits alone, whatever the format it is written in. A phone
// number is looked for by its last phoneDigits, the subscriber's number
// with or without the country's and the area's codes before it.
const (
	minDigits   = 7
	phoneDigits = 9
)

// known is a value to look for on the other side — found in the text, on
// a screenshot, or marked — folded for each way of reading it.
type known struct {
	value  string
	kind   Kind
	key    string // its variable's key (normalise); a part has the whole value's
	fold   []rune // as OCR reads it (fold)
	digram []rune // as OCR reads it with a digraph for a letter ("rn" for m), when it has one
	text   []rune // as typed (foldText)
	digits string // a marked phone or card number's digits
	screen bool   // read on a screenshot
	part   bool   // a line of a value that spans lines
	mark   bool
	seen   bool       // a mark covered on a screenshot
	words  []markWord // a mark's words, everyday ones left out
}

// markWord is a word of a mark, folded as OCR reads it and as typed; a
// short one counts only beside another word of its mark.
type markWord struct {
	ocr, text string
	short     bool
}

// Redactor replaces the sensitive values of one SOP with variables: each
// distinct value gets one name, used wherever it appears — found in the
// text, marked by the model, or read on one of its screenshots. Safe for
// concurrent use.
type Redactor struct {
	det *Detector
	mu  sync.Mutex
	// what is looked for: marks, then the values found, in order
	known []*known
	index map[string]*known // key → value
	// variables
	vars    map[string]string // key → variable name
	kinds   map[string]Kind   // variable name → kind
	order   []string          // variable names, as assigned
	taken   map[string]bool   // names in use, ours and the document's
	counts  map[Kind]int
	sources map[Source]int
}

// NewRedactor returns a redactor over det that also replaces marks.
func NewRedactor(det *Detector, marks []Mark) *Redactor {
	r := &Redactor{det: det, index: map[string]*known{}, vars: map[string]string{}, kinds: map[string]Kind{},
		taken: map[string]bool{}, counts: map[Kind]int{}, sources: map[Source]int{}}
	for _, m := range marks {
		v := strings.Join(strings.Fields(m.Value), " ")
		least := minMarked
		if strings.IndexFunc(v, func(r rune) bool { return !isWordRune(r) && unicode.IsLetter(r) }) >= 0 {
			least = minMarkedCJK
		}
		if utf8.RuneCountInString(v) < least || !slices.Contains(ModelKinds, m.Kind) {
			continue
		}
		k := r.learn(v, m.Kind, false)
		k.mark = true
		if d := digitsOf(v).s; (m.Kind == Phone || m.Kind == Card) && len(d) >= minDigits {
			if m.Kind == Phone {
				d = d[max(0, len(d)-phoneDigits):]
			}
			k.digits = d
		}
		for _, w := range strings.Fields(v) {
			w = strings.Trim(w, markTrim)
			f := fold(w)
			if n := utf8.RuneCountInString(f); n >= least && !isEveryday(w) {
				k.words = append(k.words, markWord{f, foldText(w), false})
			} else if n == 2 && strings.ContainsRune(v, ' ') {
				// "Wu" of "Wu, Jie": only beside another word of the name.
				k.words = append(k.words, markWord{f, foldText(w), true})
			}
		}
	}
	return r
}

// markTrim is the punctuation around a word that is not part of it.
const markTrim = `.,;:()[]{}<>"'!?`

// learn records v as a value to look for, once per spelling; the caller
// holds r.mu or owns r alone.
func (r *Redactor) learn(v string, kind Kind, screen bool) *known {
	return r.learnPart(v, kind, screen, "")
}

// learnPart records v, a part of the value whose key is whole ("" when v
// is whole itself): found in a text, it is replaced by the whole value's
// variable.
func (r *Redactor) learnPart(v string, kind Kind, screen bool, whole string) *known {
	id := normalise(v, kind)
	key := id
	if whole != "" {
		key, id = whole, "part:"+id
	}
	if k, ok := r.index[id]; ok {
		k.screen = k.screen || screen
		return k
	}
	f := fold(v)
	k := &known{value: v, kind: kind, key: key, fold: []rune(f), text: []rune(foldText(v)), screen: screen, part: whole != ""}
	if d := digraphs.Replace(f); d != f {
		k.digram = []rune(d)
	}
	r.index[id] = k
	r.known = append(r.known, k)
	return k
}

// learnLines records v, and each line of it when it spans lines (a
// wrapped key, a private key), as learn does; and, of a value that holds
// spaces, each word made as keys are — upper- and lower-case letters and
// digits, not an image's name or a build's id — (a key OCR read a space
// into, or read beside its id: a model repeats the key alone). The caller
// holds r.mu.
func (r *Redactor) learnLines(v string, kind Kind, screen bool) {
	whole := r.learn(v, kind, screen)
	if pieces := strings.Split(v, "\n"); len(pieces) > 1 {
		for _, p := range pieces {
			if p = strings.TrimSpace(p); utf8.RuneCountInString(p) >= minPart {
				r.learnPart(p, kind, screen, whole.key)
			}
		}
	}
	if words := strings.Fields(v); len(words) > 1 {
		for _, w := range words {
			if utf8.RuneCountInString(w) >= minPart && mixedAlphabet(w) && !wordlike(w) {
				r.learnPart(w, kind, screen, whole.key)
			}
		}
	}
}

// Reserve tells the redactor names the document already uses, so that a
// variable never takes one of them.
func (r *Redactor) Reserve(names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		r.taken[n] = true
	}
}

// hit is a value's place in a text, what it is and where it was found.
type hit struct {
	Match
	src Source
	key string // the value's key when it is a known one
}

// Text returns s with every sensitive value replaced by its variable: the
// values the rules find in it, and every value known so far wherever it
// appears — found in another text, marked, or read on a screenshot
// (however OCR spelled it), whatever the spacing and the line breaks.
func (r *Redactor) Text(s string) string {
	if strings.TrimSpace(s) == "" {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return replace(s, r.hits(s), func(h hit) string { return r.variable(s[h.Start:h.End], h.Kind, h.src, h.key) })
}

// Scrub returns s with every value Text would replace written as its kind
// in brackets ("[name]"), naming no variable: for logs and the problems of
// a rejected answer, with that answer's marks.
func (r *Redactor) Scrub(s string) string {
	if r == nil || r.det == nil || strings.TrimSpace(s) == "" {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return replace(s, r.hits(s), func(h hit) string { return "[" + string(h.Kind) + "]" })
}

// replace writes s with each hit replaced by with(hit).
func replace(s string, hits []hit, with func(hit) string) string {
	if len(hits) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, h := range hits {
		b.WriteString(s[last:h.Start])
		b.WriteString(with(h))
		last = h.End
	}
	b.WriteString(s[last:])
	return b.String()
}

// hits are the values in s: the rules', and every known value's
// occurrences. The caller holds r.mu.
func (r *Redactor) hits(s string) []hit {
	var hits []hit
	for _, m := range r.det.Find(s) {
		src := FromText
		if m.Kind == Custom {
			src = FromPattern
		}
		hits = append(hits, hit{m, src, ""})
	}
	typed, ocr, digits := readings(s), lazyReadings(s, true), lazyDigits(s)
	for _, k := range r.known {
		src := FromText
		switch {
		case k.mark:
			src = FromModel
		case k.screen || k.part:
			src = FromOCR
		case k.kind == Custom:
			src = FromPattern
		}
		for _, sp := range r.occurrences(s, typed, ocr, digits, k) {
			hits = append(hits, hit{Match{sp[0], sp[1], k.kind}, src, k.key})
		}
	}
	return unionHits(hits)
}

// numberChars are what a phone or card number is written with.
const numberChars = "0123456789 -.()/+"

// numberStart moves start back over the rest of the number it is in: the
// country's and the area's codes before a subscriber's number ("+1 (415)
// 555-0132"), never past two spaces in a row or a line break.
func numberStart(s string, start int) int {
	for start > 0 && strings.IndexByte(numberChars, s[start-1]) >= 0 && !strings.HasSuffix(s[:start], "  ") {
		start--
	}
	for start < len(s) && strings.IndexByte("0123456789(+", s[start]) < 0 {
		start++ // not a space or a dash it began with
	}
	return start
}

// reading is a folded view of a text, as runes, with the byte offset of
// each rune in the view.
type reading struct {
	v       view
	runes   []rune
	offsets []int
}

func readings(s string) *reading { return newReading(folded(identity(s), false)) }

func newReading(v view) *reading { return &reading{v, []rune(v.s), runeOffsets(v.s)} }

// lazyReadings is the OCR reading of s, made the first time it is asked.
func lazyReadings(s string, ocr bool) func() *reading {
	return sync.OnceValue(func() *reading { return newReading(folded(identity(s), ocr)) })
}

// lazyDigits is the digits of s, made the first time they are asked.
func lazyDigits(s string) func() view { return sync.OnceValue(func() view { return digitsOf(s) }) }

// occurrences returns the spans of s where k appears. A marked phone or
// card number by its digits, whatever its format; a mark as whole words,
// as typed (case, accents and spacing folded: "Sam" is not "5AM"); a value
// read on a screenshot within OCR's errors — substitutions, a digraph for
// a letter, and one character more or less, never a word more ("…RAA for
// Maps" is not "…RAAMaps"); a value found in another text as typed. A
// value found inside a token is widened to the whole token; a short one
// must be a whole word. A value read across lines (a wrapped key) must be
// there whole: its lines are looked for one by one, as parts.
func (r *Redactor) occurrences(s string, typed *reading, ocr func() *reading, digits func() view, k *known) [][2]int {
	if k.digits != "" {
		var out [][2]int
		d := digits()
		for from := 0; ; {
			i := strings.Index(d.s[from:], k.digits)
			if i < 0 {
				return out
			}
			start, end := d.span(from+i, from+i+len(k.digits))
			start = numberStart(s, start)
			if bounded(s, start, end) && strings.Trim(s[start:end], numberChars) == "" {
				out = append(out, [2]int{start, end})
			}
			from += i + len(k.digits)
		}
	}
	in, patterns, edits := typed, [][]rune{k.text}, 0
	if (k.screen || k.part) && !k.mark {
		in, patterns = ocr(), [][]rune{k.fold}
		if k.digram != nil {
			patterns = append(patterns, k.digram)
		}
		if len(k.fold) >= minTokenMatch && !strings.Contains(k.value, "\n") {
			edits = allowedEdits(len(k.fold))
		}
	}
	var out [][2]int
	for _, pattern := range patterns {
		if len(pattern) == 0 || !mayContain(in.v.s, pattern, edits) {
			continue
		}
		for _, at := range approx(in.runes, pattern, edits) {
			if abs(at[1]-at[0]-len(pattern)) > 1 {
				continue
			}
			start, end := in.v.span(in.offsets[at[0]], in.offsets[at[1]])
			if edits == 0 {
				// As typed: a whole word, or a whole value inside a token
				// ("password=hunter2" holds hunter2).
				if !bounded(s, start, end) {
					continue
				}
			} else {
				start, end = widen(s, start, end)
			}
			out = append(out, [2]int{start, end})
		}
	}
	return out
}

// runeOffsets maps rune indexes of s to byte offsets (one past the end
// too).
func runeOffsets(s string) []int {
	out := make([]int, 0, len(s)+1)
	for i := range s {
		out = append(out, i)
	}
	return append(out, len(s))
}

// widen grows s[start:end] to the whole token it is part of: a value OCR
// read a character short must not leave that character behind.
func widen(s string, start, end int) (int, int) {
	for start > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:start])
		// "=" begins a value ("KEY=…"): the name before it stays.
		if !isTokenRune(r) || r == '=' || r == '.' && (start-n == 0 || s[start-n-1] == ' ') {
			break
		}
		start -= n
	}
	for end < len(s) {
		r, n := utf8.DecodeRuneInString(s[end:])
		if !isTokenRune(r) || r == '.' && (end+n == len(s) || !isTokenRune(rune(s[end+n]))) {
			break
		}
		end += n
	}
	return start, end
}

// sourceRank orders the sources of one value found twice: the model's
// mark names it first (it knows what it is), then the rules.
var sourceRank = map[Source]int{FromModel: 0, FromText: 1, FromPattern: 2, FromOCR: 3}

// unionHits merges overlapping hits (the longest one's kind, source and
// key; of equally long ones, the first source of sourceRank), sorted.
func unionHits(hits []hit) []hit {
	return merge(hits, func(h *hit) *Match { return &h.Match }, func(a, b hit) int { return sourceRank[a.src] - sourceRank[b.src] })
}

// variable returns "{{NAME_n}}" for value, naming it the first time; key,
// when set, is the known value it is a spelling of. The caller holds r.mu.
func (r *Redactor) variable(value string, kind Kind, src Source, key string) string {
	if key == "" {
		key = normalise(value, kind)
	}
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
	r.learnLines(value, kind, false) // looked for on the screenshots, and its lines in the texts
	return "{{" + name + "}}"
}

// normalise makes the spellings of one value one key: whatever its
// spacing and line breaks; a card or IBAN with or without separators; an
// e-mail address, a name or an address in any case.
func normalise(v string, kind Kind) string {
	v = strings.Join(strings.Fields(v), " ")
	switch kind {
	case Card, IBAN:
		return string(kind) + ":" + strings.NewReplacer(" ", "", "-", "").Replace(strings.ToUpper(v))
	case Email, Name, Address, Phone:
		return string(kind) + ":" + strings.ToLower(v)
	case Password, Custom, Secret:
		return string(kind) + ":" + v
	}
	return string(kind) + ":" + strings.ReplaceAll(v, " ", "")
}

// Report is metadata.privacy: distinct values per kind and per source,
// never a value. A value the text never had is counted too: read on a
// screenshot by the rules (source ocr), or marked and covered on one
// (source model).
func (r *Redactor) Report() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	counts, sources := map[string]any{}, map[string]any{}
	for k, n := range r.counts {
		counts[string(k)] = n
	}
	for s, n := range r.sources {
		sources[string(s)] = n
	}
	// Values never in the text: read on a screenshot by the rules, or
	// marked by the model and covered where OCR read them.
	onlyOnScreen := map[string]known{}
	for _, k := range r.known {
		if _, named := r.vars[k.key]; !named && (k.screen && !k.mark || k.mark && k.seen) {
			onlyOnScreen[k.key] = *k
		}
	}
	for _, k := range onlyOnScreen {
		src := FromOCR
		if k.mark {
			src = FromModel
		}
		n, _ := counts[string(k.kind)].(int)
		counts[string(k.kind)] = n + 1
		m, _ := sources[string(src)].(int)
		sources[string(src)] = m + 1
	}
	return map[string]any{"counts": counts, "sources": sources}
}

// Document replaces the sensitive values in every text of doc — what the
// viewer prints, meta, the variables' descriptions, the clarification
// requests and the private part — and lists each variable it introduced
// in public.variables with a description of what to fill in. Ids, types,
// links between nodes, timestamps and screenshot paths are structure, not
// text, and stay. Two passes: every value the rules find in any text is
// learned first, so that it is replaced wherever it appears, before or
// after the text it was found in.
func (r *Redactor) Document(doc *sop.Document) {
	if doc.Public != nil {
		for name := range doc.Public.Variables {
			r.Reserve(name)
		}
	}
	texts(doc, func(s string) string {
		r.learnFound(s)
		return s
	})
	texts(doc, r.Text)
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := doc.Public; p != nil && len(r.order) > 0 {
		if p.Variables == nil {
			p.Variables = map[string]string{}
		}
		for _, name := range r.order {
			p.Variables[name] = description[r.kinds[name]]
		}
	}
}

// learnFound learns every value the rules find in s, to look for it in the
// other texts.
func (r *Redactor) learnFound(s string) {
	if strings.TrimSpace(s) == "" {
		return
	}
	found := r.det.Find(s)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range found {
		r.learnLines(s[m.Start:m.End], m.Kind, false)
	}
}

// texts rewrites every text of doc with f (see Document).
func texts(doc *sop.Document, f func(string) string) {
	if m := doc.Meta; m != nil {
		m.Title, m.Goal, m.Purpose, m.Version = f(m.Title), f(m.Goal), f(m.Purpose), f(m.Version)
		for i := range m.Owner {
			m.Owner[i] = f(m.Owner[i])
		}
	}
	if p := doc.Public; p != nil {
		for i := range p.Triggers {
			t := &p.Triggers[i]
			t.Config, t.Description = f(t.Config), f(t.Description)
		}
		for i := range p.Nodes {
			n := &p.Nodes[i]
			// Not id_path: the service numbers it (digits and dots; neither
			// the model nor an edit writes it), and a mark such as "3.1"
			// would only break the numbering.
			n.Label, n.Intent, n.Context = f(n.Label), f(n.Intent), f(n.Context)
			n.Iterator, n.ExitCondition = f(n.Iterator), f(n.ExitCondition)
		}
		// A variable's name is printed too (the Markdown export's
		// "- `name`: description"): one that holds a value is renamed.
		for _, name := range slices.Sorted(maps.Keys(p.Variables)) {
			description := f(p.Variables[name])
			if renamed := f(name); renamed != name {
				delete(p.Variables, name)
				name = renamed
				if kept := p.Variables[name]; kept != "" && kept != description {
					description = kept + "; " + description // two variables the rename made one
				}
			}
			p.Variables[name] = description
		}
		for i := range p.ClarificationRequests {
			c := &p.ClarificationRequests[i]
			c.Question = f(c.Question)
		}
	}
	if pr := doc.Private; pr != nil {
		for i := range pr.Skills {
			s := &pr.Skills[i]
			s.App, s.PerformanceHint = f(s.App), f(s.PerformanceHint)
		}
		for i, a := range pr.Artifacts {
			pr.Artifacts[i] = anyText(a, f)
		}
	}
}

// anyText rewrites every string inside a decoded JSON value with f.
func anyText(v any, f func(string) string) any {
	switch x := v.(type) {
	case string:
		return f(x)
	case []any:
		for i := range x {
			x[i] = anyText(x[i], f)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = anyText(e, f)
		}
	}
	return v
}
