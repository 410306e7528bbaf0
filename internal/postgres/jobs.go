package postgres

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// The SQL of public.jobs, in one place.
const (
	jobColumns = `job_id::text, status, created_at, updated_at, completed_at, error, coalesce(metadata, '{}'::jsonb)`

	selectJob = `SELECT ` + jobColumns + ` FROM public.jobs WHERE job_id = $1`

	// ON CONFLICT DO NOTHING returns no row when the job exists already; the
	// caller then reads it in a new statement (whose snapshot sees a row that a
	// concurrent insert just committed).
	insertQueuedJob = `INSERT INTO public.jobs (job_id, status, metadata) VALUES ($1, 'queued', $2)
ON CONFLICT (job_id) DO NOTHING RETURNING ` + jobColumns
)

// JobStore reads and writes public.jobs.
type JobStore struct {
	pool                  *pgxpool.Pool
	statusReads, sopReads *rounds[summaryKey, summaryRow]
	settled               settledCounts
	// ownerCap is the owner cap a worker's claims keep
	// (RUNOPS_OWNER_CONCURRENCY; 0: none), for the claimable count; nil in
	// a process that claims nothing.
	ownerCap *int
}

// CountClaimableUnder tells a worker's store the owner cap its claims keep
// (RUNOPS_OWNER_CONCURRENCY; 0: none; the claims themselves are told by
// QueueStore.CapOwners), so that its queue gauges say how many queued jobs
// a claim could take; it returns the store.
func (s *JobStore) CountClaimableUnder(n int) *JobStore {
	s.ownerCap = &n
	return s
}

// NewJobStore returns a store over pool.
func NewJobStore(pool *pgxpool.Pool) *JobStore {
	s := &JobStore{pool: pool}
	s.statusReads, s.sopReads = s.summaryReads(summarize, false), s.summaryReads(summarizeSOP, true)
	return s
}

// Get returns the job, or jobs.ErrNotFound.
func (s *JobStore) Get(ctx context.Context, id jobs.ID) (jobs.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, selectJob, string(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return jobs.Job{}, jobs.ErrNotFound
	}
	return j, wrap("get job", err)
}

// summaryColumns are what a jobs.Summary takes of a job's row: its
// columns, and of metadata the three keys answered, as JSON (decoded by
// summaryRow.summary; a person may have written anything there). A
// statement this plain is cheap to plan, which every statement is here, at
// every call (OpenPool: no prepared statements, for the poolers' sake): the
// same answer in one statement with the upload's owner joined in cost twice
// as much (README, "The API's pace").
// The owner is its upload's, which metadata.owner copies (the one_owner
// migration) unless metadata is no object: then it is read from the upload.
const summaryColumns = `j.status, j.created_at, j.updated_at, j.completed_at, j.error, j.metadata->'stage',
  j.metadata->'progress', j.metadata->'owner', jsonb_typeof(j.metadata) IS DISTINCT FROM 'object'`

const (
	// The rows of a round of reads (rounds): each asked-for id with its
	// row, if it has one; the SOP's with the step node asked for and the
	// tags. The first is as plain as PostgreSQL plans fastest (the ids are
	// canonical, as it prints them back); planning the second's unnest
	// and join, at every call, costs a third more.
	summarize = `SELECT j.job_id::text, '', ` + summaryColumns + `, NULL::text, NULL::jsonb
FROM public.jobs j WHERE j.job_id = ANY($1::uuid[])`
	summarizeSOP = `SELECT k.id, k.node, ` + summaryColumns + `, t.sop, t.frames->k.node
FROM unnest($1::text[], $2::text[]) AS k(id, node) JOIN public.jobs j ON j.job_id = k.id::uuid
LEFT JOIN public.runops_stored_tags t ON t.job_id = j.job_id`
	// Without a row: the upload's owner, and the tags.
	summarizeUpload = `SELECT (SELECT u.owner FROM public.runops_uploads u WHERE u.job_id = $1), t.sop, t.frames->$2
FROM (SELECT 1) one LEFT JOIN public.runops_stored_tags t ON t.job_id = $1`
)

// readsAtOnce is how many of job-status's statements (and as many of the
// SOP reads') run at once; the reads that arrive meanwhile share the next.
// Two keep one statement in flight while another's answer travels.
const readsAtOnce = 2

// summaryKey is what a summary is read for: a job, and the step node whose
// screenshot's tag is asked for ("": none).
type summaryKey struct{ id, node string }

// summaryRow is a job's row as summarize reads it.
type summaryRow struct {
	status                            string
	createdAt, updatedAt, completedAt pgtype.Timestamptz
	errorText                         *string
	stage, progress, owner            []byte // JSON
	ownerElsewhere                    bool   // metadata holds no owner: the upload's is read
	sopTag                            *string
	frameTag                          []byte // JSON
}

// summaryReads reads the rows of a round of keys with one statement: query
// takes the ids, and withNodes, their step nodes too.
func (s *JobStore) summaryReads(query string, withNodes bool) *rounds[summaryKey, summaryRow] {
	return &rounds[summaryKey, summaryRow]{limit: readsAtOnce, read: func(ctx context.Context, keys []summaryKey) (map[summaryKey]summaryRow, error) {
		var args []any
		if withNodes {
			ids, nodes := make([]string, len(keys)), make([]string, len(keys))
			for i, k := range keys {
				ids[i], nodes[i] = k.id, k.node
			}
			args = []any{ids, nodes}
		} else {
			// As uuids, not text: pgx encodes text into uuid[] by trying
			// its plans in turn, 19 allocations more a statement.
			ids := make([]pgtype.UUID, len(keys))
			for i, k := range keys {
				u, err := uuid.Parse(k.id)
				if err != nil {
					return nil, err
				}
				ids[i] = pgtype.UUID{Bytes: u, Valid: true}
			}
			args = []any{ids}
		}
		rows, _ := s.pool.Query(ctx, query, args...)
		out := make(map[summaryKey]summaryRow, len(keys))
		var k summaryKey
		var r summaryRow
		_, err := pgx.ForEachRow(rows, []any{&k.id, &k.node, &r.status, &r.createdAt, &r.updatedAt, &r.completedAt,
			&r.errorText, &r.stage, &r.progress, &r.owner, &r.ownerElsewhere, &r.sopTag, &r.frameTag}, func() error {
			out[k] = r
			return nil
		})
		return out, err
	}}
}

// Summary reads what job-status and queue-job answer with of job id: one
// statement when it has a row — shared with the reads of other jobs that
// arrive meanwhile — and one more for the upload's owner when it has none,
// or when its metadata is no object (which then holds no owner).
func (s *JobStore) Summary(ctx context.Context, id jobs.ID) (jobs.Summary, error) {
	return s.summary(ctx, s.statusReads, id, "")
}

// SOPSummary is Summary with the entity tags recorded for the job's SOP and
// its step node's screenshot ("": none).
func (s *JobStore) SOPSummary(ctx context.Context, id jobs.ID, node string) (jobs.Summary, error) {
	return s.summary(ctx, s.sopReads, id, node)
}

// summary reads a jobs.Summary of id through reads.
func (s *JobStore) summary(ctx context.Context, reads *rounds[summaryKey, summaryRow], id jobs.ID, node string) (jobs.Summary, error) {
	// In its canonical form, as a round's keys are matched: one the
	// statement's cast refused would fail every read of the round.
	id, err := jobs.ParseID(string(id))
	if err != nil {
		return jobs.Summary{}, fmt.Errorf("read job: %w", err) // not an outage
	}
	if node != "" && !jobs.SafeNodeID(node) {
		// As the screenshot route refuses it; one PostgreSQL cannot take
		// as text would fail every read of its round.
		return jobs.Summary{}, fmt.Errorf("read job: %q is not a step node id", node)
	}
	r, found, err := reads.get(ctx, summaryKey{string(id), node})
	var uploader *string
	switch {
	case err == nil && !found:
		uploader, r.sopTag, r.frameTag, err = s.summarizeUpload(ctx, id, node)
	case err == nil && r.ownerElsewhere:
		uploader, _, _, err = s.summarizeUpload(ctx, id, node)
	}
	if err != nil {
		return jobs.Summary{}, wrap("read job", err)
	}
	sum := r.summary(found)
	if uploader != nil {
		sum.Owner = *uploader
	}
	return sum, nil
}

// summarizeUpload reads what summary answers of a job without a row. Its
// own function: the scan's pointers would move a summary's row to the heap
// on every read.
func (s *JobStore) summarizeUpload(ctx context.Context, id jobs.ID, node string) (uploader, sopTag *string, frameTag []byte, err error) {
	err = s.pool.QueryRow(ctx, summarizeUpload, string(id), node).Scan(&uploader, &sopTag, &frameTag)
	return uploader, sopTag, frameTag, err
}

// summary decodes the row: metadata's keys each as Job's accessors read
// them from decoded metadata (decodeMetadata) — a value of another type, or
// a number out of float64's range, is none.
func (r summaryRow) summary(found bool) jobs.Summary {
	sum := jobs.Summary{Found: found, Status: jobs.Status(r.status), CreatedAt: stamp(r.createdAt), UpdatedAt: stamp(r.updatedAt),
		CompletedAt: stampOrNil(r.completedAt), Error: r.errorText}
	sum.Stage, sum.Owner, sum.FrameTag = jsonString(r.stage), jsonString(r.owner), jsonString(r.frameTag)
	// A JSON number as PostgreSQL prints one (never NaN, Infinity or hex),
	// read as json.Unmarshal reads it, without its decoder.
	if len(r.progress) > 0 && (r.progress[0] == '-' || '0' <= r.progress[0] && r.progress[0] <= '9') {
		if p, err := strconv.ParseFloat(string(r.progress), 64); err == nil {
			sum.Progress = jobs.ClampProgress(p)
		}
	}
	if r.sopTag != nil {
		sum.SOPTag = *r.sopTag
	}
	return sum
}

// jsonString is raw's string when raw is a JSON string, "" for any other
// value. PostgreSQL writes a string's every escape (a control character
// too): one without a backslash is its text between the quotes.
func jsonString(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	if inner := raw[1 : len(raw)-1]; raw[len(raw)-1] == '"' && !bytes.ContainsRune(inner, '\\') {
		return string(inner)
	}
	var out string
	_ = json.Unmarshal(raw, &out)
	return out
}

// Enqueue inserts a queued job unless one with this id exists. It returns the
// job as it now is and whether this call created it; concurrent calls for one
// id create exactly one row.
func (s *JobStore) Enqueue(ctx context.Context, id jobs.ID, metadata map[string]any) (jobs.Job, bool, error) {
	if metadata == nil {
		metadata = map[string]any{}
	}
	// A row can vanish between the two statements (a person deleting it): try again.
	for range 3 {
		j, err := scanJob(s.pool.QueryRow(ctx, insertQueuedJob, string(id), metadata))
		if err == nil {
			return j, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return jobs.Job{}, false, wrap("insert job", err)
		}
		j, err = s.Get(ctx, id)
		if !errors.Is(err, jobs.ErrNotFound) {
			return j, false, err
		}
	}
	return jobs.Job{}, false, fmt.Errorf("insert job %s: row kept disappearing", id)
}

// queueNow is what the scaler reads, from the indexes alone (every
// process asks every few seconds, so it must not grow with the table): the
// queued and processing jobs (their partial indexes); how long the job
// that has waited longest has been in the queue (runops_queue.since, its
// index; …20261208000000_queue_since.sql), whatever a person edited on its
// row since; how many queued jobs a claim could take now, with the owner
// cap $1 (0: none): of each owner with jobs queued, at most the cap less its
// jobs processing (runops_owners, kept by the claim's triggers); and how
// long the oldest of those has waited (an owner at its cap waits by design).
const queueNow = `SELECT (SELECT count(*) FROM public.jobs WHERE status = 'queued')::int,
  (SELECT count(*) FROM public.jobs WHERE status = 'processing')::int,
  (SELECT coalesce(extract(epoch FROM now() - min(q.since)), 0) FROM public.runops_queue q)::float8,
  (SELECT coalesce(sum(CASE WHEN $1::int > 0 THEN least(o.queued, greatest($1::int - o.processing, 0)) ELSE o.queued END), 0)
   FROM public.runops_owners o WHERE o.queued > 0)::int,
  coalesce((SELECT extract(epoch FROM now() - min(f.since)) FROM public.runops_owners o
   CROSS JOIN LATERAL (SELECT q.since FROM public.runops_queue q WHERE q.owner = o.owner ORDER BY q.since LIMIT 1) f
   WHERE o.queued > 0 AND ($1::int <= 0 OR o.processing < $1::int)), 0)::float8`

// settledStats counts the other rows by status (completed, error, any a
// person typed): a scan of the whole table, so read at most every
// settledEvery. 235 ms on a million rows, at every scrape of every process
// of a fleet, was most of a core.
const settledStats = `SELECT status, count(*)::int FROM public.jobs
WHERE status NOT IN ('queued', 'processing') GROUP BY status`

// settledEvery is how often settledStats is read.
const settledEvery = 5 * time.Minute

// settledCounts is settledStats' last answer.
type settledCounts struct {
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

// QueueStats reads the numbers the queue gauges show: the queue's as they
// are now, the other statuses' as they were up to settledEvery ago.
func (s *JobStore) QueueStats(ctx context.Context) (metrics.QueueStats, error) {
	var queued, processing, claimable int
	var oldest, oldestClaimable float64
	if err := s.pool.QueryRow(ctx, queueNow, cmp.Or(s.ownerCap, new(0))).Scan(&queued, &processing, &oldest, &claimable, &oldestClaimable); err != nil {
		return metrics.QueueStats{}, wrap("queue stats", err)
	}
	s.settled.mu.Lock()
	defer s.settled.mu.Unlock()
	if s.settled.counts == nil || time.Since(s.settled.at) >= settledEvery {
		rows, err := s.pool.Query(ctx, settledStats)
		if err != nil {
			return metrics.QueueStats{}, wrap("job counts", err)
		}
		counts := map[string]int{}
		var status string
		var n int
		if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error { counts[status] = n; return nil }); err != nil {
			return metrics.QueueStats{}, wrap("job counts", err)
		}
		s.settled.at, s.settled.counts = time.Now(), counts
	}
	out := metrics.QueueStats{ByStatus: map[string]int{"queued": queued, "processing": processing},
		OldestQueued: time.Duration(oldest * float64(time.Second))}
	if s.ownerCap != nil {
		out.Claimable = &claimable
		out.OldestClaimable = time.Duration(oldestClaimable * float64(time.Second))
	}
	for status, n := range s.settled.counts {
		out.ByStatus[status] = n
	}
	return out, nil
}

// Ping checks that the database answers.
func (s *JobStore) Ping(ctx context.Context) error {
	return wrap("ping database", s.pool.Ping(ctx))
}

// scanJob reads jobColumns, then any extra columns into extra.
func scanJob(row pgx.Row, extra ...any) (jobs.Job, error) {
	var (
		j                      jobs.Job
		id                     string
		status                 string
		created, updated, done pgtype.Timestamptz
		meta                   []byte
	)
	if err := row.Scan(append([]any{&id, &status, &created, &updated, &done, &j.Error, &meta}, extra...)...); err != nil {
		return jobs.Job{}, err
	}
	j.ID, j.Status, j.CreatedAt, j.UpdatedAt, j.CompletedAt = jobs.ID(id), jobs.Status(status), stamp(created), stamp(updated), stampOrNil(done)
	var err error
	if j.Metadata, err = decodeMetadata(meta); err != nil {
		return jobs.Job{}, fmt.Errorf("job %s's metadata: %w", id, err)
	}
	return j, nil
}

// The times the service answers with, from the earliest to the latest that
// RFC 3339 and JSON can say.
var (
	earliest = time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(9999, time.December, 31, 23, 59, 59, 999999999, time.UTC)
)

// stamp is a timestamptz column as the service answers it: a time a person
// set beyond what it can say (PostgreSQL's infinity, a year past 9999 or
// before 1) is the nearest one it can, instead of failing the read — and
// with it every read that shares its statement, or a claim that took it.
func stamp(ts pgtype.Timestamptz) time.Time {
	switch {
	case ts.InfinityModifier == pgtype.Infinity || ts.Valid && ts.Time.After(latest):
		return latest
	case ts.InfinityModifier == pgtype.NegativeInfinity || ts.Valid && ts.Time.Before(earliest):
		return earliest
	}
	return ts.Time
}

// stampOrNil is stamp, nil for NULL.
func stampOrNil(ts pgtype.Timestamptz) *time.Time {
	if !ts.Valid {
		return nil
	}
	t := stamp(ts)
	return &t
}

// decodeMetadata decodes a job's metadata as encoding/json would (numbers
// as float64; metadata that is not an object has no keys), but a number
// float64 cannot hold — which a person can write in the dashboard, and
// jsonb keeps — stays a json.Number with its digits instead of failing the
// whole decode: such a job would fail every read of it, and every claim
// that took it with others. Accessors see a value of another type (none),
// and the number is written back as it was. Likewise, arrays and objects
// nested deeper than maxMetadataDepth (jsonb keeps 10,000 levels and more;
// encoding/json refuses them) are read as null: the rest of the metadata
// is read, and the value is kept in the row, which writes only merge into.
func decodeMetadata(raw []byte) (map[string]any, error) {
	if len(raw) == 0 || raw[0] != '{' {
		// Not an object (a person's edit; PostgreSQL prints jsonb without
		// leading space): none of its keys.
		return map[string]any{}, nil
	}
	m := map[string]any{}
	if json.Unmarshal(raw, &m) == nil {
		return m, nil // as nearly every row is
	}
	m = map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(pruneDeep(raw, maxMetadataDepth)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	withFloats(m)
	return m, nil
}

// maxMetadataDepth is the deepest array or object of a job's metadata
// that is read; the service itself nests five levels at most.
const maxMetadataDepth = 1000

// pruneDeep is raw, valid JSON text, with every array and object that
// opens deeper than limit replaced by null; raw itself, not a copy, when
// it has none.
func pruneDeep(raw []byte, limit int) []byte {
	if bytes.Count(raw, []byte{'['})+bytes.Count(raw, []byte{'{'}) <= limit {
		return raw
	}
	var out []byte        // nil until a value is cut
	depth, pruned := 0, 0 // pruned > 0: inside a value cut at that depth
	inString, escaped := false, false
	for i, c := range raw {
		keep := pruned == 0
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if keep && depth > limit {
				if out == nil {
					out = append(make([]byte, 0, len(raw)), raw[:i]...)
				}
				pruned, keep = depth, false
				out = append(out, "null"...)
			}
		case c == ']' || c == '}':
			if depth == pruned {
				pruned, keep = 0, false
			}
			depth--
		}
		if keep && out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return raw
	}
	return out
}

// withFloats turns each json.Number in v that float64 holds into one (maps
// and slices in place).
func withFloats(v any) any {
	switch v := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			return f
		}
	case map[string]any:
		for k, e := range v {
			v[k] = withFloats(e)
		}
	case []any:
		for i, e := range v {
			v[i] = withFloats(e)
		}
	}
	return v
}

const recordUpload = `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, nullif($2, ''))
ON CONFLICT (job_id) DO NOTHING`

// RecordUpload remembers that an upload URL for id was issued to owner ("":
// anonymous).
func (s *JobStore) RecordUpload(ctx context.Context, id jobs.ID, owner string) error {
	_, err := s.pool.Exec(ctx, recordUpload, string(id), owner)
	return wrap("record upload", err)
}

const notify = `SELECT pg_notify($1, $2)`

// Notify sends payload on channel (pg_notify), committed at once.
func (s *JobStore) Notify(ctx context.Context, channel, payload string) error {
	_, err := s.pool.Exec(ctx, notify, channel, payload)
	return wrap("notify", err)
}
