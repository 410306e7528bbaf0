// Package jobs is the domain of a video-to-SOP job: its identity, states,
// limits and the storage paths derived from its id. It knows nothing of
// HTTP, SQL or storage protocols.
package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Status is the value of the jobs.status column.
type Status string

// The job lifecycle: queued → processing → completed | error.
const (
	StatusQueued     Status = "queued"
	StatusProcessing Status = "processing"
	StatusCompleted  Status = "completed"
	StatusError      Status = "error"
)

// Known tells whether s is one of the four statuses above: a person may
// write any other in the dashboard, which no worker runs.
func (s Status) Known() bool {
	return s == StatusQueued || s == StatusProcessing || s == StatusCompleted || s == StatusError
}

// Limits shared by the bucket, config.toml, queue-job and the worker.
const (
	// MaxUploadBytes is the frontend's own 750 * 1024 * 1024.
	MaxUploadBytes int64 = 750 * 1024 * 1024
	// MaxDuration is the frontend's 20 * 60 seconds.
	MaxDuration = 20 * time.Minute
)

// Why an upload's size is refused (in a *Failure's chain).
var (
	ErrEmptyUpload    = errors.New("empty upload")
	ErrUploadTooLarge = errors.New("upload over the size limit")
)

// CheckUploadSize refuses an empty upload or one over MaxUploadBytes with a
// *Failure for the person; the API (before queueing) and the worker (on the
// bytes it really got) say the same thing.
func CheckUploadSize(size int64) error {
	switch {
	case size <= 0:
		return Fail("The uploaded file is empty. Please upload the recording again.", ErrEmptyUpload)
	case size > MaxUploadBytes:
		return Fail(fmt.Sprintf("The video is larger than %d MB, the limit; please upload a shorter recording.",
			MaxUploadBytes>>20), fmt.Errorf("%w: %d bytes", ErrUploadTooLarge, size))
	}
	return nil
}

// Bucket is the private storage bucket that holds every object of a job.
const Bucket = "videos"

// ErrNotFound is returned by stores when a job row does not exist.
var ErrNotFound = errors.New("job not found")

// ErrObjectMissing is returned by object stores when an object does not exist.
var ErrObjectMissing = errors.New("object not found")

// ErrInvalidToken means an access token is not accepted: badly signed,
// expired, or unknown to the auth server.
var ErrInvalidToken = errors.New("invalid or expired access token")

// ObjectInfo is what storage says of an object.
type ObjectInfo struct {
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	ETag        string    `json:"etag"`
	Created     time.Time `json:"created_at"`
	Updated     time.Time `json:"last_modified"`
}

// ErrInvalidID reports a job id that is not a UUID.
var ErrInvalidID = errors.New("jobId must be a UUID")

// ID is a job id in its canonical lower-case hyphenated form; storage paths
// are only ever built from it.
type ID string

// ParseID accepts any UUID spelling and returns the canonical form.
func ParseID(s string) (ID, error) {
	s = strings.TrimSpace(s)
	// uuid.Parse also accepts urn:uuid: and braces; we accept only the plain
	// 36-character form (any case) or 32 hex digits, so paths stay predictable.
	if len(s) != 36 && len(s) != 32 {
		return "", ErrInvalidID
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", ErrInvalidID
	}
	if len(s) == 36 && !strings.ContainsAny(s, "ABCDEF") {
		return ID(s), nil // canonical already (the hyphens are where Parse checked them)
	}
	return ID(u.String()), nil
}

// NewID returns a random (version 4) job id.
func NewID() (ID, error) {
	u, err := uuid.NewRandom()
	if err != nil {
		return "", err
	}
	return ID(u.String()), nil
}

// RawPath is where the browser uploads the recording.
func (id ID) RawPath() string { return "raw/" + string(id) + ".mp4" }

// SlimPath is where the down-sampled copy goes.
func (id ID) SlimPath() string { return "slim/" + string(id) + ".mp4" }

// SOPPath is where the SOP document goes.
func (id ID) SOPPath() string { return "sops/" + string(id) + ".json" }

// FramePath is where the screenshot of the SOP's node goes, and what the
// node's screenshot field says. The node id must be SafeNodeID.
func (id ID) FramePath(node string) string { return id.FramesFolder() + "/" + node + ".jpg" }

// FramesFolder is the folder of the job's screenshots.
func (id ID) FramesFolder() string { return "frames/" + string(id) }

// SafeNodeID tells whether a node id can name an object: letters, digits,
// dashes and underscores, 1 to 100 of them (no dots, no slashes).
// MaxNodeID is the longest step id SafeNodeID takes.
const MaxNodeID = 100

func SafeNodeID(node string) bool {
	if node == "" || len(node) > MaxNodeID {
		return false
	}
	for _, c := range node {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Job is one row of public.jobs.
type Job struct {
	ID          ID
	Status      Status
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt *time.Time
	Error       *string
	// Metadata is the merged jsonb metadata (never nil once loaded).
	Metadata map[string]any
}

// Stage is metadata.stage, or "" when absent.
func (j Job) Stage() string {
	s, _ := j.Metadata["stage"].(string)
	return s
}

// Progress is metadata.progress, or nil when absent; a value a person wrote
// outside 0–1 is its nearest end.
func (j Job) Progress() *float64 {
	if p, ok := j.Metadata["progress"].(float64); ok {
		return ClampProgress(p)
	}
	return nil
}

// ClampProgress is p within 0–1, as a progress can say.
func ClampProgress(p float64) *float64 {
	p = min(max(p, 0), 1)
	return &p
}

// Summary is what the API answers with of a job, read without the rest of
// its metadata: the row's columns, the few metadata keys
// job-status shows, its owner, and the entity tags recorded when its SOP and
// screenshots were stored (public.runops_stored_tags). Found is false when
// the job has no row; Owner is then the one its upload was issued to.
type Summary struct {
	Found       bool
	Status      Status
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt *time.Time
	Error       *string
	Stage       string   // metadata.stage when a string, as Job.Stage
	Progress    *float64 // metadata.progress when a number, as Job.Progress
	Owner       string   // metadata.owner when a string, as Job.Owner
	SOPTag      string   // the served SOP's ETag, "" when none is recorded
	FrameTag    string   // the asked-for step screenshot's ETag, "" when none is recorded
}

// Priorities: metadata.priority, lower runs sooner (docs/lifecycle.md).
const (
	MinPriority = -100
	MaxPriority = 100
)

// Priority is metadata.priority as claims read it (the database's
// runops_priority): an integer from MinPriority to MaxPriority; absent, it
// is 0, and anything else is read as 0 too, with ok false — a bad edit
// never breaks claiming, and runops jobs show says so.
func (j Job) Priority() (priority int, ok bool) {
	v, present := j.Metadata["priority"]
	if !present || v == nil {
		return 0, true
	}
	f, isNumber := v.(float64)
	if !isNumber || f != float64(int(f)) || f < MinPriority || f > MaxPriority {
		return 0, false
	}
	return int(f), true
}

// Owner is metadata.owner (the user id that queued the job), or "".
func (j Job) Owner() string {
	s, _ := j.Metadata["owner"].(string)
	return s
}

// ErrUnavailable wraps errors that mean a backing service cannot answer now
// (connection refused or lost, timeouts, overload): callers answer 503 and
// retry, never blame the user.
var ErrUnavailable = errors.New("service unavailable")

// ErrNoConnections wraps errors of a database that refuses new connections
// (too many clients, SQLSTATE 53300): an outage too (it wraps
// ErrUnavailable as well), one that ends when connections free up.
var ErrNoConnections = errors.New("the database refuses new connections (too many clients, SQLSTATE 53300)")

// ErrBusy wraps errors that mean a lock could not be had in time: someone
// else is changing the same thing; try again in a moment.
var ErrBusy = errors.New("busy")

// ErrRefusedKey wraps errors that mean a backing service refused our own
// credentials (a wrong or rotated service key): a configuration error for
// the operators, never the user's fault and never cured by retrying.
var ErrRefusedKey = errors.New("our credentials were refused")

// Failure is a permanent failure of a job, with a sentence for a person
// ("The video is 24 minutes long; the limit is 20 minutes."). Err is the
// technical cause, for logs only.
type Failure struct {
	Message string
	Err     error
}

func (f *Failure) Error() string {
	if f.Err != nil {
		return f.Message + ": " + f.Err.Error()
	}
	return f.Message
}

func (f *Failure) Unwrap() error { return f.Err }

// Fail returns a permanent failure with message for a person.
func Fail(message string, cause error) error { return &Failure{Message: message, Err: cause} }

// MergeMetadata returns a copy of a with b deep-merged into it, as every
// write of metadata merges in the database (runops_jsonb_merge): objects
// into objects, anything else replaces. Neither a nor b is changed.
func MergeMetadata(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				v = MergeMetadata(am, bm)
			}
		}
		out[k] = v
	}
	return out
}

// ETag is the entity tag the API serves bytes with (an SOP as served, a
// step's screenshot): a strong, quoted digest of them.
func ETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}
