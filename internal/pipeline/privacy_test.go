package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/privacytest"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/supabasetest"
)

// kindResult is what the privacy pass did to the values of one kind of the
// corpus.
type kindResult struct {
	values      int // on the screens
	keptInText  int // still in the SOP's text or its Markdown, as a person reads it
	readBefore  int // read by OCR on the unredacted picture
	readAfter   int // of those, still read on the stored screenshot
	readAnyways int // read on the stored screenshot though not on the unredacted one
}

// corpusResult is the privacy pass measured on the whole corpus.
type corpusResult struct {
	kinds                  map[string]*kindResult
	leaks                  []string // what is kept or still read, for a person: "kind on screen: where"
	wordsBefore, wordsRead int      // ordinary words OCR reads on the unredacted pictures, and still on the stored ones
	redacting, transcoding time.Duration
}

// corpusPass runs each recording of the corpus through the whole pipeline
// (the stand-in model gives the answer of a careless model that copies
// every value into the SOP's text) with the privacy pass on, and reads what
// it stored: the SOP's text and Markdown, and every step's screenshot,
// with the corpus's own reader (privacytest.Read, Reads).
func corpusPass(tb testing.TB, c privacytest.Corpus) corpusResult {
	ctx := context.Background()
	dir := tb.TempDir()
	p, fake, ai := privatePipeline(tb)
	res := corpusResult{kinds: map[string]*kindResult{}}
	for n, rec := range c.Recordings {
		video := rec.Make(tb, dir)
		id := jobs.ID(fmt.Sprintf("00000000-0000-4000-8000-0000000c%04d", n))
		fake.PutFile("videos/"+id.RawPath(), video, "video/mp4")
		ai.Answer(geminitest.JSON(privacytest.ModelAnswer(rec.Screens)))
		clock := &stageClock{md: map[string]any{}}
		if err := p.Run(ctx, queue.Job{Job: jobs.Job{ID: id, Metadata: map[string]any{}}, TempDir: filepath.Join(dir, rec.Name), Token: "t"}, clock); err != nil {
			tb.Fatal(err)
		}
		clock.Stage(ctx, "")
		res.redacting += clock.took["redacting"]
		res.transcoding += clock.took["transcoding"]
		text := storedText(tb, fake, id)

		// The unredacted frame and the stored screenshot of every screen,
		// read two at a time.
		before := make([]string, len(rec.Screens))
		after := make([]string, len(rec.Screens))
		var g errgroup.Group
		g.SetLimit(2)
		for i, s := range rec.Screens {
			g.Go(func() error {
				frame := mediatest.Frame(tb, video, float64(s.Second)+0.5, filepath.Join(dir, rec.Name+"-"+s.Name+".jpg"))
				before[i] = privacytest.Read(tb, frame)
				obj, ok := fake.Object("videos/" + id.FramePath(s.Name))
				if !ok {
					tb.Errorf("%s: no screenshot stored; frames %v", s.Name, clock.md["frames"])
					return nil
				}
				after[i] = privacytest.Read(tb, obj.File)
				if os.Getenv("PRIVACY_DEBUG") != "" {
					b, _ := os.ReadFile(obj.File)
					_ = os.WriteFile(filepath.Join(os.TempDir(), "privacy-"+s.Name+".jpg"), b, 0o644)
				}
				return nil
			})
		}
		_ = g.Wait()
		for i, s := range rec.Screens {
			for _, v := range s.Values {
				k := res.kinds[v.Kind]
				if k == nil {
					k = &kindResult{}
					res.kinds[v.Kind] = k
				}
				k.values++
				if privacytest.Reads(text, v) {
					k.keptInText++
					res.leaks = append(res.leaks, v.Kind+" on "+s.Name+": kept in the text")
				}
				was, is := privacytest.Reads(before[i], v), privacytest.Reads(after[i], v)
				switch {
				case was && is:
					k.readBefore++
					k.readAfter++
					res.leaks = append(res.leaks, v.Kind+" on "+s.Name+": still read on the screenshot")
				case was:
					k.readBefore++
				case is:
					k.readAnyways++
					res.leaks = append(res.leaks, v.Kind+" on "+s.Name+": read on the screenshot, not on the recording")
				}
			}
			// Ordinary words: of those OCR reads on the unredacted frame,
			// how many it still reads on the stored one.
			var legible []string
			for _, w := range s.Words {
				if n, _ := privacytest.WordsRead(before[i], []string{w}); n == 1 {
					legible = append(legible, w)
				}
			}
			read, _ := privacytest.WordsRead(after[i], legible)
			if os.Getenv("PRIVACY_DEBUG") != "" {
				var lost []string
				for _, w := range legible {
					if n, _ := privacytest.WordsRead(after[i], []string{w}); n == 0 {
						lost = append(lost, w)
					}
				}
				tb.Logf("%s lost %q\nBEFORE\n%s\nAFTER\n%s", s.Name, lost, before[i], after[i])
			}
			res.wordsBefore += len(legible)
			res.wordsRead += read
		}
	}
	return res
}

// storedText is every text of the stored SOP (its strings, decoded) and
// its Markdown, one after another.
func storedText(tb testing.TB, fake *supabasetest.Server, id jobs.ID) string {
	obj, ok := fake.Object("videos/" + id.SOPPath())
	if !ok {
		tb.Fatal("no SOP stored")
	}
	b, err := os.ReadFile(obj.File)
	if err != nil {
		tb.Fatal(err)
	}
	doc, err := sop.Load(b, string(id))
	if err != nil {
		tb.Fatal(err)
	}
	var decoded any
	if err := json.Unmarshal(b, &decoded); err != nil {
		tb.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(decoded)
	out = append(out, string(sop.Markdown(doc, func(sop.Node) string { return "" })))
	return strings.Join(out, "\n")
}

// table is the result per kind, as README shows it.
func (r corpusResult) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| kind | values | kept in the text | read before | still read after |\n|---|---|---|---|---|\n")
	var total kindResult
	for _, kind := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.kinds {
			if !yield(k) {
				return
			}
		}
	}) {
		k := r.kinds[kind]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", kind, k.values, k.keptInText, k.readBefore, k.readAfter+k.readAnyways)
		total.values += k.values
		total.keptInText += k.keptInText
		total.readBefore += k.readBefore
		total.readAfter += k.readAfter + k.readAnyways
	}
	fmt.Fprintf(&b, "| **all %d kinds** | **%d** | **%d** | **%d** | **%d** |\n", len(r.kinds), total.values, total.keptInText, total.readBefore, total.readAfter)
	fmt.Fprintf(&b, "ordinary words still read: %d of %d (%.1f %%); redacting %.2f s, transcoding %.2f s: %.2f×\n",
		r.wordsRead, r.wordsBefore, 100*float64(r.wordsRead)/float64(max(r.wordsBefore, 1)),
		r.redacting.Seconds(), r.transcoding.Seconds(), float64(r.redacting)/float64(r.transcoding))
	return b.String()
}

// The corpus of ordinary screens (a billing page, a terminal with a
// wrapped service-role key, a credentials file, a private key, a sign-in
// form, an API-keys page, a .env in a dark terminal…), through the whole
// pipeline with a model that copies every value into the SOP: no value is
// kept in the text or its Markdown; no value OCR reads on the recording is
// read on a stored screenshot; 95 % of the ordinary words OCR reads on the
// recording it still reads.
func TestThePrivacyCorpus(t *testing.T) {
	t.Parallel()
	res := corpusPass(t, privacytest.New(seed()))
	t.Logf("\n%s", res.table())
	for _, l := range res.leaks {
		t.Error(l)
	}
	total := 0
	for _, k := range res.kinds {
		total += k.readBefore
	}
	if total < 40 || len(res.kinds) < 20 {
		t.Errorf("OCR reads %d values of %d kinds on the recordings: the corpus proves little", total, len(res.kinds))
	}
	if res.wordsRead*100 < res.wordsBefore*95 {
		t.Errorf("%d of %d ordinary words still read", res.wordsRead, res.wordsBefore)
	}
}

func seed() uint64 {
	if s := os.Getenv("PRIVACY_SEED"); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		return n
	}
	return 1
}

// BenchmarkPrivacy is TestThePrivacyCorpus measured: per kind, the values
// kept in the text, read on the unredacted frame and still read after; the
// share of ordinary words still read; the redacting stage against the
// transcoding stage of the same runs.
//
//	go test -run '^$' -bench Privacy -benchtime 1x ./internal/pipeline/
func BenchmarkPrivacy(b *testing.B) {
	var res corpusResult
	for range b.N {
		res = corpusPass(b, privacytest.New(1))
	}
	b.Logf("\n%s", res.table())
	kept, after := 0, 0
	for _, k := range res.kinds {
		kept += k.keptInText
		after += k.readAfter + k.readAnyways
	}
	b.ReportMetric(float64(kept), "kept-in-text")
	b.ReportMetric(float64(after), "still-read")
	b.ReportMetric(float64(res.wordsRead)/float64(max(res.wordsBefore, 1)), "words-read")
	b.ReportMetric(float64(res.redacting)/float64(res.transcoding), "redacting/transcode")
	b.ReportMetric(0, "ns/op")
}
