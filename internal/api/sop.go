package api

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

// SOPLocker serialises every read-modify-write of one job's SOP, across
// processes; the worker's write of the SOP takes the same lock.
type SOPLocker interface {
	WithSOPLock(ctx context.Context, id jobs.ID, fn func(context.Context) error) error
	// ForgetSOP forgets the SOP's recorded ETag, before an edit takes the
	// lock (postgres.SOPLocker.ForgetSOP).
	ForgetSOP(ctx context.Context, id jobs.ID) error
	// StoreTagged stores the SOP with store, under the lock, keeping the
	// ETag recorded for it true, and returns that ETag
	// (postgres.SOPLocker.StoreTagged).
	StoreTagged(ctx context.Context, id jobs.ID, served []byte, shown []string, frames map[string]string, store func() error) (string, error)
}

const (
	msgSOPNotFound = "SOP not found"
	msgSOPBusy     = "The SOP is still being generated; edit it once the job is complete."
	msgSOPDamaged  = "The stored SOP is damaged, so it cannot be shown or edited; an operator can replace it. Details: "
)

type sopResponse struct {
	JobID     string          `json:"job_id"`
	Data      json.RawMessage `json:"data"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// loadSOP reads the stored document as the viewer gets it: repaired where
// that is mechanical and checked (sop.Load), with its times and the entity
// tag of exactly what is served.
func (s *server) loadSOP(ctx context.Context, id jobs.ID) (sopResponse, *sop.Document, string, error) {
	raw, info, err := s.readSOP(ctx, id)
	if err != nil {
		return sopResponse{}, nil, "", err
	}
	raw, doc, err := sop.Served(raw, string(id))
	if err != nil {
		s.o.Logger.Error("stored SOP is not one the viewer renders", "job_id", id, "error", err)
		return sopResponse{}, nil, "", &Error{Status: http.StatusConflict, Message: msgSOPDamaged + err.Error()}
	}
	return sopResponse{JobID: string(id), Data: raw, CreatedAt: info.Created.UTC(), UpdatedAt: info.Updated.UTC()}, doc, jobs.ETag(raw), nil
}

// readSOP reads the stored bytes and their object info. The bytes must be
// the object's as its info says now (storedAs): a CDN in front of Storage
// can answer with a copy it kept from before the last edit, and an edit
// made on that copy would drop the one before it. A copy that is not the
// object's is read again past the basic CDN (DownloadVersion); one that is
// still not is a 503: the Smart CDN learns of a change within a minute
// (docs/dependencies.md, "Supabase Storage").
func (s *server) readSOP(ctx context.Context, id jobs.ID) ([]byte, jobs.ObjectInfo, error) {
	info, err := s.o.Objects.Stat(ctx, id.SOPPath())
	var raw []byte
	if err == nil {
		raw, err = s.downloadSOP(ctx, id, "")
	}
	if digest, ok := storedAs(info); err == nil && ok && !sameDigest(raw, digest) {
		// Stored again between the two reads (an edit elsewhere, the
		// worker), or a kept copy: the info as it is now tells.
		if info, err = s.o.Objects.Stat(ctx, id.SOPPath()); err == nil {
			if digest, ok = storedAs(info); ok && !sameDigest(raw, digest) {
				s.o.Logger.Warn("storage served an earlier copy of the SOP: reading it again past the CDN", "job_id", id)
				if raw, err = s.downloadSOP(ctx, id, digest); err == nil && !sameDigest(raw, digest) {
					return nil, info, &Error{Status: http.StatusServiceUnavailable, RetryAfter: 60,
						Message: "File storage is still serving an earlier copy of this SOP; try again in a minute."}
				}
			}
		}
	}
	switch {
	case err == nil:
		return raw, info, nil
	case errors.Is(err, jobs.ErrObjectMissing):
		return nil, info, &Error{Status: http.StatusNotFound, Message: msgSOPNotFound}
	}
	return nil, info, fromBackend("File storage", err, "Failed to read the SOP")
}

// downloadSOP reads the stored bytes, of version when not "".
func (s *server) downloadSOP(ctx context.Context, id jobs.ID, version string) ([]byte, error) {
	body, _, err := s.o.Objects.DownloadVersion(ctx, id.SOPPath(), version)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	raw, err := io.ReadAll(io.LimitReader(body, sop.MaxDocumentBytes))
	if err != nil {
		return nil, errors.Join(jobs.ErrUnavailable, err)
	}
	return raw, nil
}

// storedAs is the MD5 digest, in hex, of an object's bytes, from its info:
// Storage's ETag of an object uploaded in one request. One uploaded in
// parts ("…-3") or otherwise tells nothing: ok is false.
func storedAs(info jobs.ObjectInfo) (digest string, ok bool) {
	d := strings.Trim(info.ETag, `"`)
	if _, err := hex.DecodeString(d); err != nil || len(d) != 2*md5.Size {
		return "", false
	}
	return strings.ToLower(d), true
}

func sameDigest(raw []byte, digest string) bool {
	sum := md5.Sum(raw)
	return hex.EncodeToString(sum[:]) == digest
}

func writeSOP(w http.ResponseWriter, resp sopResponse, tag string) {
	w.Header().Set("ETag", tag)
	writeJSON(w, http.StatusOK, resp)
}

// GET /api/sop/{jobId}
func (s *server) getSOP(w http.ResponseWriter, r *http.Request) error {
	id, err := pathJobID(r)
	if err != nil {
		return err
	}
	format, err := sopFormat(r)
	if err != nil {
		return err
	}
	j, err := s.sopJob(r, id, "")
	if err != nil {
		return err
	}
	w.Header().Set("Vary", "Accept")
	// A revalidation of what was served: the tag recorded when the SOP was
	// stored answers it, without reading storage.
	if format == "json" && j.SOPTag != "" && notModified(w, r, j.SOPTag) {
		return nil
	}
	resp, doc, tag, err := s.loadSOP(r.Context(), id)
	if err != nil {
		return err
	}
	if format == "json" && notModified(w, r, tag) {
		return nil
	}
	if format == "md" {
		return s.writeMarkdown(w, r, id, doc)
	}
	writeSOP(w, resp, tag)
	return nil
}

// sopJob reads the job of an SOP (Found false when it has no row: an SOP
// put there by hand, or a row deleted since), with the tags recorded for its
// SOP and step node's screenshot, and hides the SOP of a job someone else
// owns. Without a row the owner is the one its upload was issued to:
// deleting the row makes nothing public.
func (s *server) sopJob(r *http.Request, id jobs.ID, node string) (jobs.Summary, error) {
	j, err := s.o.Jobs.SOPSummary(r.Context(), id, node)
	if err != nil {
		return jobs.Summary{}, fromBackend("The job database", err, "Failed to read the SOP")
	}
	if !mayAccess(j.Owner, r) {
		return jobs.Summary{}, &Error{Status: http.StatusNotFound, Message: msgSOPNotFound}
	}
	return j, nil
}

// notModified answers 304 when the request's If-None-Match names tag (or
// is *), with the headers a 200 would have had that say what it is.
func notModified(w http.ResponseWriter, r *http.Request, tag string) bool {
	h := r.Header.Get("If-None-Match")
	if h == "" || (strings.TrimSpace(h) != "*" && !hasTag(h, tag, false)) {
		return false
	}
	w.Header().Set("ETag", tag)
	w.WriteHeader(http.StatusNotModified)
	return true
}

type sopPatch struct {
	Type    string             `json:"type"`
	NodeID  string             `json:"nodeId"`
	Updates map[string]*string `json:"updates"`
	// hasUpdates: the body has "updates", null included.
	hasUpdates bool
}

// patchFields are an edit's keys, as docs/frontend-contract.md spells them.
var patchFields = []string{"type", "nodeId", "updates"}

// readPatch decodes an edit with its keys as they are spelled:
// encoding/json matches a field's name in any case, and {"TYPE":"delete",
// "NODEID":…} deleted a node. A key that is one of patchFields in another
// case is a 400; others are passed over.
func readPatch(r *http.Request) (sopPatch, error) {
	var raw json.RawMessage
	if err := decodeJSON(r, &raw); err != nil {
		return sopPatch{}, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return sopPatch{}, &Error{Status: http.StatusBadRequest, Message: "Request body must be a JSON object", Cause: err}
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		for _, f := range patchFields {
			if k != f && strings.EqualFold(k, f) {
				return sopPatch{}, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("Malformed SOP edit: %q is not a field; the field is %q", k, f)}
			}
		}
	}
	var p sopPatch
	if err := json.Unmarshal(raw, &p); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return sopPatch{}, &Error{Status: http.StatusBadRequest, Message: "Malformed SOP edit: " + ute.Field + " has the wrong type"}
		}
		return sopPatch{}, &Error{Status: http.StatusBadRequest, Message: "Request body must be a JSON object", Cause: err}
	}
	_, p.hasUpdates = fields["updates"]
	return p, nil
}

// editable are the node fields an update may change, each with the most
// characters it may hold: a step's title, and a paragraph or two.
var editable = []string{"label", "intent", "context"}

var maxEditChars = map[string]int{"label": 500, "intent": 4000, "context": 4000}

func (p sopPatch) check() error {
	bad := func(msg string) error { return &Error{Status: http.StatusBadRequest, Message: msg} }
	if strings.TrimSpace(p.NodeID) == "" {
		return bad("Missing nodeId")
	}
	switch p.Type {
	case "update":
		if len(p.Updates) == 0 {
			return bad(`"updates" must change at least one of label, intent, context`)
		}
		for k, v := range p.Updates {
			if !slices.Contains(editable, k) {
				return bad(`"updates" may only change label, intent and context, not ` + k)
			}
			if v == nil {
				return bad(`"updates.` + k + `" must be a string`)
			}
			if k == "label" && strings.TrimSpace(*v) == "" {
				return bad(`"updates.label" must not be blank: every step is shown by its label`)
			}
			if n := utf8.RuneCountInString(*v); n > maxEditChars[k] {
				return bad(fmt.Sprintf(`"updates.%s" is %d characters long; it may be at most %d`, k, n, maxEditChars[k]))
			}
		}
	case "delete":
		if p.hasUpdates {
			return bad(`a delete takes no "updates"`)
		}
	default:
		return bad(`"type" must be "update" or "delete"`)
	}
	return nil
}

// PATCH /api/sop/{jobId}: update a node's text, or delete a node with its
// children, their edges and steps; one atomic read-modify-write.
func (s *server) patchSOP(w http.ResponseWriter, r *http.Request) error {
	id, err := pathJobID(r)
	if err != nil {
		return err
	}
	patch, err := readPatch(r)
	if err != nil {
		return err
	}
	if err := patch.check(); err != nil {
		return err
	}
	j, err := s.sopJob(r, id, "")
	if err != nil {
		return err
	}
	if j.Found && (j.Status == jobs.StatusQueued || j.Status == jobs.StatusProcessing) {
		return &Error{Status: http.StatusConflict, Message: msgSOPBusy}
	}

	unlock, err := s.edits.lock(r.Context(), id)
	if err != nil {
		return err
	}
	defer unlock()
	var out sopResponse
	var outTag string
	var dropped []string // screenshots of the nodes an edit deletes
	// A recorded tag forgotten before the lock, the store need not let the
	// lock go to forget it, and the SOP is read once; should this fail, or
	// a tag be recorded meanwhile, the store forgets it so.
	if j.SOPTag != "" {
		if err := s.o.SOPs.ForgetSOP(r.Context(), id); err != nil {
			s.o.Logger.Warn("SOP tag not forgotten before the edit's lock", "job_id", id, "error", err)
		}
	}
	err = s.o.SOPs.WithSOPLock(r.Context(), id, func(ctx context.Context) error {
		cur, doc, tag, err := s.loadSOP(ctx, id)
		if err != nil {
			return err
		}
		before := screenshots(doc)
		if m := r.Header.Get("If-Match"); m != "" && m != "*" && !hasTag(m, tag, true) {
			return &Error{Status: http.StatusPreconditionFailed, Message: "The SOP changed since you loaded it; reload it and edit again."}
		}
		b, err := s.edited(doc, patch)
		if err != nil {
			return err
		}
		storedTag, err := s.o.SOPs.StoreTagged(ctx, id, b, sop.Shown(doc), nil, func() error {
			if err := s.o.Objects.Upload(ctx, id.SOPPath(), bytes.NewReader(b), int64(len(b)), "application/json"); err != nil {
				return fromBackend("File storage", err, "Failed to save the SOP")
			}
			return nil
		})
		if err != nil {
			return err
		}
		after := screenshots(doc)
		out, outTag = sopResponse{JobID: string(id), Data: b, CreatedAt: cur.CreatedAt, UpdatedAt: time.Now().UTC()}, storedTag
		for _, path := range before {
			if !slices.Contains(after, path) {
				dropped = append(dropped, path)
			}
		}
		return nil
	})
	if err != nil && outTag != "" && s.editStands(r.Context(), id, outTag) {
		// Stored, and what is stored now, though the lock's transaction
		// failed at its end (its connection ended during the upload): the
		// edit is done, and its deleted steps' screenshots go with it.
		s.o.Logger.Warn("SOP edit stored though its lock's connection ended; it stands", "job_id", id, "error", err)
		err = nil
	}
	if err == nil && len(dropped) > 0 {
		s.removeFrames(r.Context(), id, dropped)
	}
	if err != nil {
		var e *Error
		switch {
		case errors.As(err, &e):
			return err
		case errors.Is(err, jobs.ErrBusy):
			return errSOPBusy // another process's edit or the worker's write holds the lock
		}
		return fromBackend("The job database", err, "Failed to edit the SOP")
	}
	writeSOP(w, out, outTag)
	return nil
}

// edited applies patch to doc and returns the document to store: what a
// person types kept to the worker's privacy rules, valid for the viewer,
// and short enough to be read back.
func (s *server) edited(doc *sop.Document, patch sopPatch) ([]byte, error) {
	if err := apply(doc, patch); err != nil {
		return nil, err
	}
	if s.o.Privacy != nil {
		// A value the detector finds becomes a variable, described in
		// public.variables.
		privacy.NewRedactor(s.o.Privacy, nil).Document(doc)
	}
	if err := sop.Validate(doc); err != nil {
		return nil, &Error{Status: http.StatusConflict, Message: "This change would leave the SOP broken, so it was not saved: " + err.Error()}
	}
	var big *sop.TooLarge
	b, err := sop.Marshal(doc)
	if errors.As(err, &big) {
		// Stored, it could never be read again, not even to undo this.
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf(
			"This change would make the SOP larger than %d MiB, more than can be read back, so it was not saved.", sop.MaxDocumentBytes>>20)}
	}
	return b, err
}

// editStands tells, under the SOP lock again, whether the SOP stored now is
// the one an edit stored, tagged tag: another writer may have taken the
// lock after the edit's connection ended, and written after it.
func (s *server) editStands(ctx context.Context, id jobs.ID, tag string) bool {
	stands := false
	err := s.o.SOPs.WithSOPLock(ctx, id, func(ctx context.Context) error {
		_, _, now, err := s.loadSOP(ctx, id)
		stands = now == tag
		return err
	})
	return err == nil && stands
}

// hasTag tells whether the list of entity tags h (If-Match, If-None-Match)
// names tag. A weak tag (W/) names it in the weak comparison
// (If-None-Match), never in the strong one (If-Match: RFC 9110, 13.1.1).
func hasTag(h, tag string, strong bool) bool {
	for t := range strings.SplitSeq(h, ",") {
		t = strings.TrimSpace(t)
		if weak, ok := strings.CutPrefix(t, "W/"); ok {
			if strong {
				continue
			}
			t = weak
		}
		if t == tag {
			return true
		}
	}
	return false
}

// apply changes doc in memory; an unknown node is a 404.
func apply(doc *sop.Document, p sopPatch) error {
	if doc.Public == nil {
		return &Error{Status: http.StatusNotFound, Message: "Node not found"}
	}
	idx := slices.IndexFunc(doc.Public.Nodes, func(n sop.Node) bool { return n.ID == p.NodeID })
	if idx < 0 {
		return &Error{Status: http.StatusNotFound, Message: "Node not found"}
	}
	if p.Type == "update" {
		n := &doc.Public.Nodes[idx]
		for k, v := range p.Updates {
			switch k {
			case "label":
				n.Label = *v
			case "intent":
				n.Intent = *v
			case "context":
				n.Context = *v
			}
		}
		return nil
	}
	// The node and everything under it go, with their edges and steps, and
	// the flow is joined around them (sop.Delete).
	sop.Delete(doc, p.NodeID)
	return nil
}
