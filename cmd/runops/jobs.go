package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/webhook"
)

const jobsUsage = `usage: runops jobs <verb>

  list [--status S] [--limit N] [--json]   newest first
  show ID [--json]                         the row, stages, attempts, probe, Gemini usage
  requeue ID | --status S [--since D]      run again, with a fresh count of attempts
  cancel ID                                stop a queued or running job ("Stopped by an operator.")
  priority ID N                            claim it before (N < 0) or after (N > 0) the others: -100 to 100
  complete ID --sop FILE                   store FILE as the job's SOP and mark it completed

Each is a person's edit, like one in the Supabase dashboard: a worker holding
the job hears of it at once.`

// shownText writes text with its control characters shown (\x1b), not
// obeyed, but for new lines and tabs: an error or a stage a person typed in
// the dashboard, or an ffmpeg message, can hold escape sequences that clear
// the operator's screen, retitle the window, or hide what follows them.
// With json, they are written as JSON escapes (\u009b): encoding/json
// escapes C0 controls in strings, but writes the C1 ones (CSI among them)
// as they are.
type shownText struct {
	w    io.Writer
	json bool
}

func (s shownText) Write(b []byte) (int, error) {
	var out strings.Builder
	for _, r := range string(b) {
		switch {
		case r == '\n', r == '\t', !unicode.IsControl(r):
			out.WriteRune(r)
		case s.json: // inside a string: the encoder writes no other raw
			fmt.Fprintf(&out, "\\u%04x", r)
		default: // C0, DEL and C1: all below U+00A0
			fmt.Fprintf(&out, "\\x%02x", r)
		}
	}
	if _, err := io.WriteString(s.w, out.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// msgCancelled is the sentence a job cancelled by an operator shows.
const msgCancelled = "Stopped by an operator."

// jobsCommand is `runops jobs …`.
func jobsCommand(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError(jobsUsage)
	}
	c := jobsVerb{name: args[0], cfg: cfg, stdout: stdout}
	fs := flag.NewFlagSet("jobs "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.status, "status", "", "a job status")
	fs.IntVar(&c.limit, "limit", 50, "how many jobs")
	fs.BoolVar(&c.asJSON, "json", false, "JSON instead of a table")
	fs.DurationVar(&c.since, "since", 0, "only jobs changed this recently (e.g. 2h)")
	fs.StringVar(&c.sopFile, "sop", "", "the SOP document to store")
	positional, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	c.positional = positional
	if err := c.checkFlags(); err != nil {
		return err
	}
	c.stdout = shownText{w: stdout, json: c.asJSON}
	verb, ok := jobsVerbs[c.name]
	if !ok { // before a pool is made for it
		return usageError(fmt.Sprintf("unknown verb %q\n\n%s", c.name, jobsUsage))
	}
	pool, err := postgres.OpenPool(ctx, postgres.Named(cfg.DatabaseURL, "runops-jobs"), 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	c.pool, c.store = pool, postgres.NewJobStore(pool)
	return verb(&c, ctx)
}

// jobsVerbs are runops jobs' verbs.
var jobsVerbs = map[string]func(*jobsVerb, context.Context) error{
	"list": (*jobsVerb).list, "show": (*jobsVerb).show, "requeue": (*jobsVerb).requeue,
	"cancel": (*jobsVerb).cancel, "priority": (*jobsVerb).priority, "complete": (*jobsVerb).complete,
}

// jobsVerb is one `runops jobs` verb as called: its flags, its positional
// arguments, and the store it edits.
type jobsVerb struct {
	name       string
	cfg        config.Config
	stdout     io.Writer
	status     string
	limit      int
	asJSON     bool
	since      time.Duration
	sopFile    string
	positional []string
	pool       *pgxpool.Pool
	store      *postgres.JobStore
}

// checkFlags refuses a limit under 1 and a negative --since: each would
// match nothing, without a word.
func (c *jobsVerb) checkFlags() error {
	switch {
	case c.limit < 1:
		return usageError(fmt.Sprintf("--limit must be 1 or more, not %d", c.limit))
	case c.since < 0:
		return usageError(fmt.Sprintf("--since must be a duration back from now, such as 2h, not %s", c.since))
	}
	return nil
}

// noteUnknownStatus says, when --status is none of the service's four and
// nothing matched it, that no job has it: a typo is not silent.
func (c *jobsVerb) noteUnknownStatus() {
	if c.status != "" && !jobs.Status(c.status).Known() {
		fmt.Fprintf(c.stdout, "(no job has the status %q; the service's are queued, processing, completed and error)\n", c.status)
	}
}

// oneID is the verb's only positional argument, a job id.
func (c *jobsVerb) oneID() (jobs.ID, error) {
	if len(c.positional) != 1 {
		return "", usageError(fmt.Sprintf("jobs %s takes one job id\n\n%s", c.name, jobsUsage))
	}
	return jobs.ParseID(c.positional[0])
}

// list prints the newest jobs, of one status if --status says so.
func (c *jobsVerb) list(ctx context.Context) error {
	list, err := c.store.List(ctx, jobs.Status(c.status), c.limit)
	if err != nil {
		return err
	}
	if c.asJSON {
		return writeJSONTo(c.stdout, list)
	}
	printJobs(c.stdout, list, time.Now())
	if len(list) == 0 {
		c.noteUnknownStatus()
	}
	return nil
}

// show prints one job and its webhook events.
func (c *jobsVerb) show(ctx context.Context) error {
	id, err := c.oneID()
	if err != nil {
		return err
	}
	j, err := c.store.Get(ctx, id)
	if err != nil {
		return describeMissing(id, err)
	}
	events, err := c.store.Webhooks().Events(ctx, id)
	if err != nil {
		return err
	}
	for i := range events {
		events[i].URL = webhook.ShownURL(events[i].URL) // where a receiver's token rides
	}
	if c.asJSON {
		return writeJSONTo(c.stdout, map[string]any{"job": j, "events": events})
	}
	printJob(c.stdout, j)
	printEvents(c.stdout, events)
	return nil
}

// requeue runs one job again, or every job of a status (--status, --since).
func (c *jobsVerb) requeue(ctx context.Context) error {
	if c.status != "" {
		if len(c.positional) > 0 {
			return usageError("jobs requeue takes a job id or --status, not both\n\n" + jobsUsage)
		}
		ids, err := c.store.RequeueAll(ctx, jobs.Status(c.status), c.since)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "requeued %d jobs\n", len(ids))
		if len(ids) == 0 {
			c.noteUnknownStatus()
		}
		for _, id := range ids {
			fmt.Fprintln(c.stdout, id)
		}
		return nil
	}
	id, err := c.oneID()
	if err != nil {
		return err
	}
	return report(c.stdout, id, "requeued", "is queued already, or does not exist")(c.store.Requeue(ctx, id))
}

// cancel stops a queued or running job.
func (c *jobsVerb) cancel(ctx context.Context) error {
	id, err := c.oneID()
	if err != nil {
		return err
	}
	return report(c.stdout, id, "cancelled", "has ended already, or does not exist")(c.store.Cancel(ctx, id, msgCancelled))
}

// priority sets the order in which a job is claimed.
func (c *jobsVerb) priority(ctx context.Context) error {
	if len(c.positional) != 2 {
		return usageError("jobs priority takes a job id and a number\n\n" + jobsUsage)
	}
	id, err := jobs.ParseID(c.positional[0])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(c.positional[1])
	if err != nil || n < jobs.MinPriority || n > jobs.MaxPriority {
		return usageError(fmt.Sprintf("the priority is an integer from %d (first) to %d (last), not %q", jobs.MinPriority, jobs.MaxPriority, c.positional[1]))
	}
	return report(c.stdout, id, fmt.Sprintf("given priority %d", n), "does not exist, or its metadata is not a JSON object")(c.store.SetPriority(ctx, id, n))
}

// complete stores --sop as the job's SOP and marks the job completed.
func (c *jobsVerb) complete(ctx context.Context) error {
	id, err := c.oneID()
	if err != nil {
		return err
	}
	if c.sopFile == "" {
		return usageError("jobs complete takes --sop FILE\n\n" + jobsUsage)
	}
	return completeByHand(ctx, c.cfg, c.pool, c.store, id, c.sopFile, c.stdout)
}

// report prints what an edit did, or why it did nothing (an error: exit 1).
func report(w io.Writer, id jobs.ID, done, notDone string) func(bool, error) error {
	return func(ok bool, err error) error {
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("job %s %s", id, notDone)
		}
		fmt.Fprintf(w, "%s %s\n", done, id)
		return nil
	}
}

func describeMissing(id jobs.ID, err error) error {
	if err == jobs.ErrNotFound {
		return fmt.Errorf("no job %s", id)
	}
	return err
}

// readSOPFile reads an SOP document from a file of at most what the API
// reads back: a pipe, a device or a larger file is refused, not read for
// ever or into all the memory there is.
func readSOPFile(file string) ([]byte, error) {
	st, err := os.Stat(file) // before it is opened: opening a pipe waits for a writer
	switch {
	case err != nil:
		return nil, err
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a file (a folder, a pipe or a device?)", file)
	case st.Size() > sop.MaxDocumentBytes:
		return nil, fmt.Errorf("%s is %d bytes; an SOP may be at most %d, what the API reads back", file, st.Size(), sop.MaxDocumentBytes)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, sop.MaxDocumentBytes+1))
	if err == nil && len(raw) > sop.MaxDocumentBytes {
		err = fmt.Errorf("%s grew past %d bytes while it was read", file, sop.MaxDocumentBytes)
	}
	return raw, err
}

// completeByHand checks the document as the viewer needs it, stores it as the
// job's SOP and marks the job completed, both under the SOP lock, so that no
// worker's write can come between them.
func completeByHand(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, store *postgres.JobStore, id jobs.ID, file string, w io.Writer) error {
	raw, err := readSOPFile(file)
	if err != nil {
		return err
	}
	b, doc, err := sop.Served(raw, string(id)) // as the API serves it, and its tag is recorded
	if err != nil {
		return fmt.Errorf("%s is not an SOP the viewer can show: %w", file, err)
	}
	if err := cfg.RequireServiceKey(); err != nil {
		return err
	}
	objects, err := storage.New(storage.Config{URL: cfg.SupabaseURL, PublicURL: cfg.SupabasePublicURL,
		ServiceKey: cfg.ServiceRoleKey, Bucket: jobs.Bucket})
	if err != nil {
		return err
	}
	if _, err := store.Get(ctx, id); err != nil {
		return describeMissing(id, err)
	}
	locker := postgres.NewSOPLocker(pool)
	err = locker.WithSOPLock(ctx, id, func(ctx context.Context) error {
		shown := sop.Shown(doc)
		if _, err := locker.StoreTagged(ctx, id, b, shown, nil, func() error {
			return objects.Upload(ctx, id.SOPPath(), bytes.NewReader(b), int64(len(b)), "application/json")
		}); err != nil {
			return err
		}
		// The screenshots it shows are all the job keeps: those of an
		// earlier run's steps (often why an SOP is replaced by hand) go.
		if _, err := pipeline.RemoveUnshown(ctx, objects, id, doc); err != nil {
			return fmt.Errorf("the SOP is stored, but the screenshots it does not show could not be deleted (run the command again): %w", err)
		}
		ok, err := store.MarkCompleted(ctx, id, map[string]any{"sop": map[string]any{"path": id.SOPPath(),
			"nodes": len(doc.Public.Nodes), "edges": len(doc.Public.Edges), "by": "operator"},
			"frames": map[string]any{"count": len(shown), "missing": []any{}}})
		if err == nil && !ok {
			err = describeMissing(id, jobs.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "completed %s with %s (%d nodes)\n", id, file, len(doc.Public.Nodes))
	return nil
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJobs is the readable table of list.
func printJobs(w io.Writer, list []jobs.Job, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tSTAGE\tPROGRESS\tATTEMPT\tAGE\tERROR")
	for _, j := range list {
		progress := ""
		if p := j.Progress(); p != nil {
			progress = fmt.Sprintf("%.0f%%", *p*100)
		}
		errText := ""
		if j.Error != nil {
			errText = shorten(*j.Error, 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", j.ID, j.Status, j.Stage(), progress, orDash(j.Metadata["attempt"]),
			age(now.Sub(j.CreatedAt)), errText)
	}
	tw.Flush()
}

// printJob is show: the row, its stages with timings, its attempts, the
// probe and the Gemini usage.
func printJob(w io.Writer, j jobs.Job) {
	fmt.Fprintf(w, "job       %s\nstatus    %s\ncreated   %s\nupdated   %s\n", j.ID, j.Status,
		j.CreatedAt.Format(time.RFC3339), j.UpdatedAt.Format(time.RFC3339))
	if j.CompletedAt != nil {
		fmt.Fprintf(w, "completed %s\n", j.CompletedAt.Format(time.RFC3339))
	}
	if j.Error != nil {
		fmt.Fprintf(w, "error     %s\n", *j.Error)
	}
	if s := j.Stage(); s != "" {
		fmt.Fprintf(w, "stage     %s\n", s)
	}
	if p, ok := j.Priority(); !ok {
		b, _ := json.Marshal(j.Metadata["priority"])
		fmt.Fprintf(w, "priority  0 (metadata.priority is %s, not an integer from %d to %d: claims read it as 0)\n", b, jobs.MinPriority, jobs.MaxPriority)
	} else if p != 0 {
		fmt.Fprintf(w, "priority  %d\n", p)
	}
	if t, ok := j.Metadata["timings"].(map[string]any); ok && len(t) > 0 {
		fmt.Fprintln(w, "\nstages")
		keys := sortedKeys(t)
		for _, k := range keys {
			ms, _ := t[k].(float64)
			fmt.Fprintf(w, "  %-20s %10s\n", strings.TrimSuffix(k, "_ms"), (time.Duration(ms) * time.Millisecond).String())
		}
	}
	if list, ok := j.Metadata["attempts"].([]any); ok && len(list) > 0 {
		fmt.Fprintln(w, "\nattempts")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, a := range list {
			m, _ := a.(map[string]any)
			fmt.Fprintf(tw, "  %v\t%v\t%v\t%v\t%v\t%v\n", m["n"], orDash(m["outcome"]), m["worker"], m["started_at"], orDash(m["ended_at"]), orDash(m["error"]))
		}
		tw.Flush()
	}
	for _, key := range []string{"probe", "slim", "gemini", "sop"} {
		if v, ok := j.Metadata[key]; ok {
			b, _ := json.Marshal(v)
			fmt.Fprintf(w, "\n%s\n  %s\n", key, b)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func orDash(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func shorten(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// printEvents lists the job's webhook events with their delivery state.
func printEvents(w io.Writer, events []postgres.Event) {
	if len(events) == 0 {
		return
	}
	fmt.Fprintln(w, "\nwebhook events")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range events {
		state := fmt.Sprintf("pending (%d attempts)", e.Tries) // the column's word, as before
		switch {
		case e.DeliveredAt != nil:
			state = "delivered " + e.DeliveredAt.Format(time.RFC3339)
		case e.GivenUpAt != nil:
			state = "given up " + e.GivenUpAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.ID, e.Type, e.URL, state, e.LastError)
	}
	tw.Flush()
}
