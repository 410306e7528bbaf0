package privacytest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runops/runops/internal/mediatest"
)

// The corpus is the same for a seed, different for another, and as large
// as the issue asks: 40 values and more, of 20 kinds and more, on 8 to 12
// screens at 720p and 1080p, in both themes and both fonts.
func TestTheCorpusIsLargeAndRepeatable(t *testing.T) {
	t.Parallel()
	c := New(1)
	if !reflect.DeepEqual(c, New(1)) {
		t.Fatal("two corpora of one seed differ")
	}
	if reflect.DeepEqual(c.Values(), New(2).Values()) {
		t.Fatal("the corpora of seeds 1 and 2 are the same")
	}
	kinds := map[string]int{}
	for _, v := range c.Values() {
		kinds[v.Kind]++
	}
	screens := c.Screens()
	if n := len(c.Values()); n < 40 || len(kinds) < 20 || len(screens) < 8 || len(screens) > 12 {
		t.Fatalf("%d values of %d kinds on %d screens", n, len(kinds), len(screens))
	}
	for kind := range marks {
		if kinds[kind] == 0 {
			t.Errorf("no value of kind %s", kind)
		}
	}
	looks := map[string]bool{}
	for _, r := range c.Recordings {
		for i, s := range r.Screens {
			looks[fmt.Sprintf("%d %d %s", s.Height, s.Picture.Theme, s.Picture.Font)] = true
			if s.Second != i*ScreenSeconds+1 || s.Width != r.Width || s.Height != r.Height {
				t.Errorf("%s: second %d, %dx%d in a %dx%d recording", s.Name, s.Second, s.Width, s.Height, r.Width, r.Height)
			}
			if len(s.Words) < 10 {
				t.Errorf("%s: only %d ordinary words %q", s.Name, len(s.Words), s.Words)
			}
		}
	}
	for _, want := range []string{"720 0 DejaVuSans.ttf", "720 1 DejaVuSansMono.ttf", "720 0 DejaVuSansMono.ttf",
		"1080 0 DejaVuSans.ttf", "1080 1 DejaVuSansMono.ttf", "1080 0 DejaVuSansMono.ttf"} {
		if !looks[want] {
			t.Errorf("no screen of height, theme and font %s (have %v)", want, looks)
		}
	}
}

// Every value looks exactly like a real one: the provider's prefix,
// alphabet and length; cards Luhn-valid; IBANs mod-97; the service-role
// key an HS256 JWT of role service_role; the key blocks real keys.
func TestValuesLookReal(t *testing.T) {
	t.Parallel()
	shapes := map[string]*regexp.Regexp{
		"github":     regexp.MustCompile(`^(ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})$`),
		"gitlab":     regexp.MustCompile(`^glpat-[A-Za-z0-9_-]{20}$`),
		"slack":      regexp.MustCompile(`^xoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24}$`),
		"stripe":     regexp.MustCompile(`^[sr]k_live_[A-Za-z0-9]{24,99}$`),
		"aws_id":     regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`),
		"aws_secret": regexp.MustCompile(`^[A-Za-z0-9/+]{40}$`),
		"google":     regexp.MustCompile(`^AIza[A-Za-z0-9_-]{35}$`),
		"openai":     regexp.MustCompile(`^sk-proj-[A-Za-z0-9_-]{74}T3BlbkFJ[A-Za-z0-9_-]{74}$`),
		"anthropic":  regexp.MustCompile(`^sk-ant-api03-[A-Za-z0-9_-]{93}AA$`),
		"npm":        regexp.MustCompile(`^npm_[A-Za-z0-9]{36}$`),
		"pypi":       regexp.MustCompile(`^pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}$`),
		"sendgrid":   regexp.MustCompile(`^SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$`),
		"twilio":     regexp.MustCompile(`^(SK|AC)[0-9a-f]{32}$`),
		"db_url":     regexp.MustCompile(`^[A-Za-z0-9]{16,}$`),
		"password":   regexp.MustCompile(`^\S{12,}$`),
		"bearer":     regexp.MustCompile(`^[A-Za-z0-9_-]{40,}$`),
		"card":       regexp.MustCompile(`^[45]\d{3} \d{4} \d{4} \d{4}$`),
		"iban":       regexp.MustCompile(`^(DE\d{2}( \d{4}){4} \d{2}|GB\d{2} [A-Z]{4}( \d{4}){3} \d{2}|FR\d{2}( \d{4}){5} \d{3})$`),
		"email":      regexp.MustCompile(`^[a-z]+(\.[a-z-]+)*(\+[a-z]+)?@[a-z-]+(\.[a-z]+)+$`),
		"phone":      regexp.MustCompile(`^\+\d{1,2} [\d ()-]{8,}$`),
		"name":       regexp.MustCompile(`^\p{Lu}\p{L}+ \p{Lu}[\p{L}-]+$`),
	}
	nonASCII := 0
	for _, s := range New(1).Screens() {
		for _, v := range s.Values {
			if re, ok := shapes[v.Kind]; ok && !re.MatchString(v.Text) {
				t.Errorf("%s: %s %q is not of the shape %s", s.Name, v.Kind, v.Text, re)
			}
			if strings.Contains(strings.ToUpper(v.Text), "EXAMPLE") || strings.Contains(v.Text, "xxxx") ||
				strings.Contains(v.Text, "abcdef") || strings.Contains(v.Text, "123456") {
				t.Errorf("%s: %s %q looks like a placeholder", s.Name, v.Kind, v.Text)
			}
			if v.Marked != (v.Kind == "name" || v.Kind == "address" || v.Kind == "phone") || v.Mark == "" {
				t.Errorf("%s: %s marked %v as %q", s.Name, v.Kind, v.Marked, v.Mark)
			}
			switch v.Kind {
			case "name":
				if strings.ContainsFunc(v.Text, func(r rune) bool { return r > 127 }) {
					nonASCII++
				}
			case "card":
				d := strings.ReplaceAll(v.Text, " ", "")
				if luhnDigit(d[:15]) != d[15] {
					t.Errorf("card %s is not Luhn-valid", v.Text)
				}
			case "iban":
				s := strings.ReplaceAll(v.Text, " ", "")
				if ibanMod97(s[4:]+s[:4]) != 1 {
					t.Errorf("IBAN %s fails mod-97", v.Text)
				}
			case "supabase_jwt":
				parts := strings.Split(v.Text, ".")
				payload, err := base64.RawURLEncoding.DecodeString(parts[1])
				var claims map[string]any
				if len(parts) != 3 || err != nil || json.Unmarshal(payload, &claims) != nil ||
					claims["role"] != "service_role" || claims["iss"] != "supabase" || len(parts[2]) != 43 {
					t.Errorf("service-role key %s: claims %v", v.Text, claims)
				}
			case "pem":
				b, _ := pem.Decode([]byte(v.Text))
				if b == nil || b.Type != "RSA PRIVATE KEY" {
					t.Fatalf("no PEM block in %q", v.Text)
				}
				key, err := x509.ParsePKCS1PrivateKey(b.Bytes)
				if err != nil || key.N.BitLen() != 1024 {
					t.Errorf("PEM key: %v", err)
				}
				for _, l := range strings.Split(v.Text, "\n")[1:13] {
					if len(l) != 64 {
						t.Errorf("PEM line %q is not 64 characters", l)
					}
				}
			case "openssh":
				lines := strings.Split(v.Text, "\n")
				raw, err := base64.StdEncoding.DecodeString(strings.Join(lines[1:len(lines)-1], ""))
				if lines[0] != "-----BEGIN OPENSSH PRIVATE KEY-----" || err != nil ||
					!strings.HasPrefix(string(raw), "openssh-key-v1\x00\x00\x00\x00\x04none\x00\x00\x00\x04none") ||
					!strings.Contains(string(raw), "ssh-ed25519") || len(lines[1]) != 70 {
					t.Errorf("OpenSSH key %q: %v", v.Text, err)
				}
			}
		}
	}
	if nonASCII < 3 {
		t.Errorf("only %d names with letters beyond ASCII", nonASCII)
	}
	// The service-role key is signed with its project's JWT secret.
	secret := "k3Jq9XvT2mWbL8pRzN5yHcQ7dFgA4sUe1oIiVtE6"
	parts := strings.Split(newGen(7).supabaseServiceKey("qwhbvmzkptrlxncdsagf", secret), ".")
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if sig, _ := base64.RawURLEncoding.DecodeString(parts[2]); !hmac.Equal(sig, mac.Sum(nil)) {
		t.Errorf("the service-role key's signature is not its HMAC-SHA256")
	}
}

// What each screen draws holds its values (a wrapped one in its pieces)
// and its words; the careless model's answer repeats every value, marks
// the names, addresses and phones with a box on the screen, and has two
// shown steps at one second.
func TestScreensAndTheModelAnswer(t *testing.T) {
	t.Parallel()
	c := New(1)
	for _, r := range c.Recordings {
		var answer struct {
			Nodes []struct {
				ID, Label, Intent, Context, Timestamp, Evidence string
				Sensitive                                       []struct {
					Value, Kind string
					Box         []int `json:"box_2d"`
				}
			}
			Edges []struct{ Source, Target, Condition string }
		}
		if err := json.Unmarshal([]byte(ModelAnswer(r.Screens)), &answer); err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		seconds := map[string]int{}
		safe := regexp.MustCompile(`^[a-z0-9-]+$`)
		for _, n := range answer.Nodes {
			text.WriteString(n.Label + "\n" + n.Intent + "\n" + n.Context + "\n")
			seconds[n.Timestamp]++
			if !safe.MatchString(n.ID) {
				t.Errorf("node id %q", n.ID)
			}
			for _, m := range n.Sensitive {
				if len(m.Box) != 4 || m.Box[0] >= m.Box[2] || m.Box[1] >= m.Box[3] {
					t.Errorf("%s: the mark %q has the box %v", n.ID, m.Value, m.Box)
				}
			}
		}
		if last := answer.Nodes[len(answer.Nodes)-1]; last.ID != "done" || len(answer.Edges) != len(answer.Nodes)-1 || answer.Edges[0].Condition != "start" {
			t.Errorf("%s: ends with %q; edges %v", r.Name, last.ID, answer.Edges)
		}
		if seconds[Timestamp(r.Screens[0].Second)] != 2 {
			t.Errorf("%s: steps per second %v", r.Name, seconds)
		}
		for _, s := range r.Screens {
			var drawn []string
			for _, l := range s.Picture.Lines {
				drawn = append(drawn, l.Text)
			}
			all := strings.Join(drawn, "\n")
			marked := 0
			for _, v := range s.Values {
				if !strings.Contains(all, v.Text) && !containsAll(all, v.Pieces) {
					t.Errorf("%s: %s %q is not drawn whole", s.Name, v.Kind, v.Text)
				}
				if v.Box.Empty() || v.Box.Max.X > s.Width || v.Box.Max.Y > s.Height {
					t.Errorf("%s: %s drawn at %v", s.Name, v.Kind, v.Box)
				}
				copied := strings.Contains(text.String(), v.Text) || (len(v.Pieces) > 1 && containsAll(text.String(), v.Pieces))
				if !copied || !Reads(text.String(), v) {
					t.Errorf("%s: the answer does not repeat %s %q", s.Name, v.Kind, v.Text)
				}
				if v.Marked {
					marked++
				}
			}
			for _, w := range s.Words {
				for _, v := range s.Values {
					if strings.Contains(v.Text, w) {
						t.Errorf("%s: the word %q is part of %s %q", s.Name, w, v.Kind, v.Text)
					}
				}
			}
			for _, n := range answer.Nodes {
				if n.ID == s.Name && (len(n.Sensitive) != marked || n.Timestamp != Timestamp(s.Second) || n.Evidence != "shown") {
					t.Errorf("%s: its step %+v", s.Name, n)
				}
			}
		}
	}
	// The wrapped service-role key: its first row ends at the terminal's
	// right edge, the next starts at the left with the rest.
	for _, s := range c.Screens() {
		for _, v := range s.Values {
			if v.Kind != "supabase_jwt" {
				continue
			}
			if len(v.Pieces) != 2 || v.Pieces[0]+v.Pieces[1] != v.Text {
				t.Fatalf("the service-role key is not wrapped in two: %q", v.Pieces)
			}
			var first, second mediatest.Line
			for i, l := range s.Picture.Lines {
				if strings.HasSuffix(l.Text, v.Pieces[0]) {
					first, second = l, s.Picture.Lines[i+1]
				}
			}
			if right := first.X + textWidth([]rune(first.Text), first.Size, mediatest.Mono); right < s.Width-2*first.X || right > s.Width ||
				!strings.HasPrefix(second.Text, v.Pieces[1]) || second.X != first.X {
				t.Errorf("wrapped rows %q (ends at %d of %d) and %q", first.Text, right, s.Width, second.Text)
			}
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return len(parts) > 0
}

// OCR, reading the frames of the rendered corpus, reads nearly every value
// and ordinary word: the values are legible, so that a value OCR still
// reads after redaction is a leak, and the words are the measure of what
// redaction spoils. The other way round, with every value's box filled
// black (a perfect redaction), Reads finds none of them and the words
// stay. The table of what OCR reads goes to the log.
func TestOCRReadsTheCorpus(t *testing.T) {
	t.Parallel()
	c := New(1)
	dir := t.TempDir()
	start := time.Now()
	var screens []Screen
	var clean, covered []string
	for _, r := range c.Recordings {
		video := r.Make(t, dir)
		for _, s := range r.Screens {
			path := mediatest.Frame(t, video, float64(s.Second), filepath.Join(dir, r.Name+"-"+s.Name+".jpg"))
			screens = append(screens, s)
			clean = append(clean, path)
			covered = append(covered, blackOut(t, path, s.Values))
		}
	}
	rendered := time.Since(start)
	texts := readAll(t, append(clean, covered...))
	t.Logf("%d screens rendered in %v, %d frames read in %v", len(screens), rendered.Round(time.Millisecond),
		len(texts), (time.Since(start) - rendered).Round(time.Millisecond))

	type count struct{ read, total int }
	kinds := map[string]*count{}
	var values, words, coveredWords count
	for i, s := range screens {
		text, coveredText := texts[i], texts[len(screens)+i]
		for _, v := range s.Values {
			if kinds[v.Kind] == nil {
				kinds[v.Kind] = &count{}
			}
			kinds[v.Kind].total++
			values.total++
			if Reads(text, v) {
				kinds[v.Kind].read++
				values.read++
			} else {
				t.Logf("%s: OCR does not read %s %q in:\n%s", s.Name, v.Kind, v.Text, text)
			}
			if Reads(coveredText, v) {
				t.Errorf("%s: %s %q is read with its box %v filled:\n%s", s.Name, v.Kind, v.Text, v.Box, coveredText)
			}
		}
		for _, w := range []struct {
			c     *count
			text  string
			frame string
		}{{&words, text, "frame"}, {&coveredWords, coveredText, "frame with the values covered"}} {
			r, n := WordsRead(w.text, s.Words)
			w.c.read += r
			w.c.total += n
			if r < n {
				var missed []string
				for _, word := range s.Words {
					if r, _ := WordsRead(w.text, []string{word}); r == 0 {
						missed = append(missed, word)
					}
				}
				t.Logf("%s: on the %s OCR reads %d of %d words, not %q", s.Name, w.frame, r, n, missed)
			}
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%-13s %4s %6s\n", "kind", "read", "values")
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		fmt.Fprintf(&table, "%-13s %4d %6d\n", k, kinds[k].read, kinds[k].total)
	}
	fmt.Fprintf(&table, "%-13s %4d %6d\nwords         %4d %6d\nwords, values covered %d of %d",
		"all values", values.read, values.total, words.read, words.total, coveredWords.read, coveredWords.total)
	t.Logf("what OCR reads on the unredacted frames:\n%s", table.String())
	if values.read*100 < values.total*80 {
		t.Errorf("OCR reads %d of %d values: the corpus is not legible enough to measure redaction", values.read, values.total)
	}
	for _, w := range []count{words, coveredWords} {
		if w.read*100 < w.total*95 {
			t.Errorf("OCR reads %d of %d ordinary words (with the values covered: %d of %d)", words.read, words.total, coveredWords.read, coveredWords.total)
		}
	}
}

// readAll is what Read reads on each picture, two at a time (tesseract
// runs one thread), off the test's goroutine (errors come back to it).
func readAll(t *testing.T, paths []string) []string {
	t.Helper()
	texts := make([]string, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 2 {
		wg.Go(func() {
			for i := range next {
				texts[i], errs[i] = ReadErr(paths[i])
			}
		})
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return texts
}

// blackOut writes the JPEG at path with each value's box (padded by 3
// pixels) filled black next to it (ffmpeg's drawbox), and returns where.
func blackOut(t *testing.T, path string, values []Value) string {
	t.Helper()
	var boxes []string
	for _, v := range values {
		r := v.Box.Inset(-3)
		boxes = append(boxes, fmt.Sprintf("drawbox=x=%d:y=%d:w=%d:h=%d:color=black:t=fill", r.Min.X, r.Min.Y, r.Dx(), r.Dy()))
	}
	out := strings.TrimSuffix(path, ".jpg") + "-covered.jpg"
	if b, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-y", "-i", path, "-vf", strings.Join(boxes, ","), "-q:v", "2", out).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}
