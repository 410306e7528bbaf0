package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/runops/runops/internal/jobs"
)

// Messages the frontend shows as they are (docs/frontend-contract.md).
const (
	msgMissingJobID  = "Missing jobId parameter"
	msgFileNotFound  = "Video file not found. Please upload again."
	msgQueueFailed   = "Failed to queue processing job"
	msgQueued        = "Video processing job has been queued"
	msgAlreadyQueued = "Video processing job was already queued"
	msgJobNotFound   = "Job not found"
	msgUploaded      = "File uploaded but processing not started"
	msgOtherStatus   = "This job's status was set by hand to '%s', which no worker runs. Set it to queued to process the video again."

	msgPriorityRole  = "Only the service role may set a job's priority: send the project's service-role key as Authorization: Bearer <key>, or leave priority out"
	msgPriorityValue = "priority must be a whole number from -100 (sooner) to 100 (later)"
)

// POST /api/get-upload-url: a new job id and a signed URL to PUT the video to.
// Any body is ignored.
func (s *server) getUploadURL(w http.ResponseWriter, r *http.Request) error {
	id, err := jobs.NewID()
	if err != nil {
		return &Error{Status: http.StatusInternalServerError, Message: "Failed to create upload URL", Cause: err}
	}
	userID, _ := userOf(r)
	if err := s.o.Jobs.RecordUpload(r.Context(), id, userID); err != nil {
		return fromBackend("The job database", err, "Failed to create upload URL")
	}
	signed, err := s.o.Objects.SignUpload(r.Context(), id.RawPath())
	if err != nil {
		return fromBackend("File storage", err, "Failed to create upload URL")
	}
	writeJSON(w, http.StatusOK, uploadURL{JobID: string(id), URL: signed, TUS: resumable(signed, id)})
	return nil
}

// uploadURL is get-upload-url's answer: what the app reads (jobId, url) and,
// for clients that can, what a TUS client needs to upload the same object
// resumably (the app ignores it).
type uploadURL struct {
	JobID string     `json:"jobId"`
	URL   string     `json:"url"`
	TUS   *tusUpload `json:"tus,omitempty"`
}

type tusUpload struct {
	Endpoint    string `json:"endpoint"`  // POST here with x-signature: token
	Token       string `json:"token"`     // the signed upload token
	ChunkSize   int    `json:"chunkSize"` // every chunk but the last (the hosted rule)
	BucketName  string `json:"bucketName"`
	ObjectName  string `json:"objectName"`
	ContentType string `json:"contentType"` // a default: send the file's own type
}

// tusChunkSize is the chunk size Supabase Storage requires of TUS clients.
const tusChunkSize = 6 << 20

// resumable derives the TUS upload of the object a signed upload URL is for:
// the same token, at the storage server's resumable endpoint on the same
// public base.
func resumable(signed string, id jobs.ID) *tusUpload {
	base, rest, ok := strings.Cut(signed, "/object/upload/sign/")
	if !ok {
		return nil
	}
	u, err := url.Parse("x://x/" + rest)
	if err != nil || u.Query().Get("token") == "" {
		return nil
	}
	return &tusUpload{Endpoint: base + "/upload/resumable/sign", Token: u.Query().Get("token"), ChunkSize: tusChunkSize,
		BucketName: jobs.Bucket, ObjectName: id.RawPath(), ContentType: "video/mp4"}
}

// POST /api/queue-job {"jobId"}: check the upload, then insert a queued row
// (idempotent: a repeat answers the job's current status).
func (s *server) queueJob(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		JobID    json.RawMessage `json:"jobId"`
		Priority json.RawMessage `json:"priority"` // the service role's only
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	priority, hasPriority, err := readPriority(body.Priority, r)
	if err != nil {
		return err
	}
	raw := strings.TrimSpace(string(body.JobID))
	if raw == "" || raw == "null" || raw == `""` {
		return &Error{Status: http.StatusBadRequest, Message: msgMissingJobID}
	}
	var text string
	if err := json.Unmarshal(body.JobID, &text); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: jobs.ErrInvalidID.Error()}
	}
	id, err := jobs.ParseID(text)
	if err != nil {
		return &Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	// The row's status and owner, or the upload's owner: an upload issued
	// to a signed-in user is that user's to queue.
	existing, err := s.o.Jobs.Summary(r.Context(), id)
	if err != nil {
		return fromBackend("The job database", err, msgQueueFailed)
	}
	if existing.Found {
		if err := checkOwner(existing.Owner, r); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]string{"jobId": string(id), "status": string(shown(existing.Status)), "message": msgAlreadyQueued})
		return nil
	}
	owner := existing.Owner
	if !mayAccess(owner, r) {
		return &Error{Status: http.StatusNotFound, Message: msgFileNotFound}
	}
	info, err := s.o.Objects.Stat(r.Context(), id.RawPath())
	switch {
	case errors.Is(err, jobs.ErrObjectMissing):
		return &Error{Status: http.StatusNotFound, Message: msgFileNotFound}
	case err != nil:
		return fromBackend("File storage", err, msgQueueFailed)
	}
	if err := checkUpload(info); err != nil {
		return err
	}

	meta := map[string]any{"upload": map[string]any{
		"size_bytes": info.Size, "content_type": info.ContentType, "etag": info.ETag,
	}}
	if owner != "" {
		// Its uploader's, whoever queues it (the service role too). An
		// upload asked for without a token stays unowned, whoever queues
		// it: the owner is who asked for the upload URL (docs/security.md),
		// as storage's policy reads it too.
		meta["owner"] = owner
	}
	if hasPriority {
		meta["priority"] = priority
	}
	job, created, err := s.o.Jobs.Enqueue(r.Context(), id, meta)
	if err != nil {
		return fromBackend("The job database", err, msgQueueFailed)
	}
	msg := msgQueued
	if !created {
		if err := checkOwner(job.Owner(), r); err != nil {
			return err
		}
		msg = msgAlreadyQueued
	}
	writeJSON(w, http.StatusOK, map[string]string{"jobId": string(id), "status": string(shown(job.Status)), "message": msg})
	return nil
}

// readPriority reads queue-job's optional priority (docs/lifecycle.md, "The
// order of claims"): set only by the service role, a whole number from -100
// to 100 (5.0 is 5).
func readPriority(raw json.RawMessage, r *http.Request) (priority int, ok bool, err error) {
	v := strings.TrimSpace(string(raw))
	if v == "" || v == "null" {
		return 0, false, nil
	}
	if !isServiceRole(r) {
		return 0, false, &Error{Status: http.StatusForbidden, Message: msgPriorityRole}
	}
	// Read exactly, as the database reads it (1e-400 is not 0, nor
	// 99.99999999999999999 100): a float64 would round first.
	var num json.Number
	r2, ok := new(big.Rat), false
	if !strings.HasPrefix(v, `"`) && json.Unmarshal(raw, &num) == nil { // json.Number takes "5" too
		_, ok = r2.SetString(num.String())
	}
	if !ok || !r2.IsInt() || !r2.Num().IsInt64() || r2.Num().Int64() < jobs.MinPriority || r2.Num().Int64() > jobs.MaxPriority {
		return 0, false, &Error{Status: http.StatusBadRequest, Message: msgPriorityValue}
	}
	return int(r2.Num().Int64()), true, nil
}

// checkUpload refuses what the worker could never process, leaving the object
// in place.
func checkUpload(info jobs.ObjectInfo) error {
	var f *jobs.Failure
	if err := jobs.CheckUploadSize(info.Size); errors.As(err, &f) {
		status := http.StatusBadRequest
		if errors.Is(err, jobs.ErrUploadTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		return &Error{Status: status, Message: f.Message}
	}
	mt, _, err := mime.ParseMediaType(info.ContentType)
	if err != nil || !strings.HasPrefix(mt, "video/") {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: fmt.Sprintf(
			"The uploaded file is not a video (its type is %q). Please upload a screen recording.", info.ContentType)}
	}
	return nil
}

// mayAccess tells whether the request may see what owner owns: anything
// anonymous, and an owned thing only with its owner's token.
func mayAccess(owner string, r *http.Request) bool {
	userID, authed := userOf(r)
	return owner == "" || (authed && owner == userID) || isServiceRole(r)
}

// checkOwner hides a job owned by someone else (from anonymous requests too).
func checkOwner(owner string, r *http.Request) error {
	if !mayAccess(owner, r) {
		return &Error{Status: http.StatusNotFound, Message: msgJobNotFound}
	}
	return nil
}

type jobStatus struct {
	JobID       string     `json:"jobId"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	CompletedAt *time.Time `json:"completedAt"`
	Error       *string    `json:"error"`
	Stage       *string    `json:"stage"`
	Progress    *float64   `json:"progress"`
}

// GET /api/job-status/{jobId}: the row, or "uploaded" when only the upload
// exists; one statement reads the row's answer and its owner.
func (s *server) jobStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := pathJobID(r)
	if err != nil {
		return err
	}
	j, err := s.o.Jobs.Summary(r.Context(), id)
	if err != nil {
		return fromBackend("The job database", err, "Failed to read job status")
	}
	if err := checkOwner(j.Owner, r); err != nil {
		return err
	}
	if j.Found {
		status, errText := served(j.Status, j.Error)
		out := jobStatus{JobID: string(id), Status: string(status), CreatedAt: j.CreatedAt.UTC(),
			UpdatedAt: j.UpdatedAt.UTC(), Error: errText, Progress: j.Progress}
		if j.CompletedAt != nil {
			t := j.CompletedAt.UTC()
			out.CompletedAt = &t
		}
		if j.Stage != "" {
			out.Stage = &j.Stage
		}
		writeStatus(w, &out)
		return nil
	}
	_, err = s.o.Objects.Stat(r.Context(), id.RawPath())
	switch {
	case errors.Is(err, jobs.ErrObjectMissing):
		return &Error{Status: http.StatusNotFound, Message: msgJobNotFound}
	case err != nil:
		return fromBackend("File storage", err, "Failed to read job status")
	}
	writeJSON(w, http.StatusOK, map[string]string{"jobId": string(id), "status": "uploaded", "message": msgUploaded})
	return nil
}

// served is the status (and error) the app is told of a row: its own, or,
// for a status a person wrote by hand that is none of the four (cancelled,
// QUEUED, …) and that no worker runs, error — with the row's error, or a
// sentence that says what to do — so that the app's page stops polling and
// shows it, instead of spinning for good on a status it does not know.
func served(status jobs.Status, errText *string) (jobs.Status, *string) {
	if status.Known() {
		return status, errText
	}
	if errText == nil || strings.TrimSpace(*errText) == "" {
		msg := fmt.Sprintf(msgOtherStatus, string(status))
		errText = &msg
	}
	return jobs.StatusError, errText
}

// shown is the status the app is told of a row (served's, without the
// error).
func shown(s jobs.Status) jobs.Status {
	status, _ := served(s, nil)
	return status
}

// decodeJSON reads a small JSON object body. An empty body decodes as {}.
// The body is one JSON value: anything after it but white space is refused
// (`{…} trailing`, two objects back to back), not ignored.
func decodeJSON(r *http.Request, into any) error {
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(into)
	if err == nil {
		if _, next := dec.Token(); next != io.EOF {
			err = cmp.Or(next, errTrailingData)
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooBig):
		return &Error{Status: http.StatusRequestEntityTooLarge, Message: "Request body is too large"}
	default:
		return &Error{Status: http.StatusBadRequest, Message: "Request body must be a JSON object", Cause: err}
	}
}

var errTrailingData = errors.New("data after the JSON value")

// pathJobID is the job id of the route's path ({jobId}); one that is not
// a UUID is a 400.
func pathJobID(r *http.Request) (jobs.ID, error) {
	id, err := jobs.ParseID(chi.URLParam(r, "jobId"))
	if err != nil {
		return "", &Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	return id, nil
}
