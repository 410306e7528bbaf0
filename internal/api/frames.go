package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/sop"
)

const (
	msgFrameNotFound = "Screenshot not found"
	// maxFrameBytes bounds what is relayed of one screenshot (a 720p JPEG is
	// a few hundred KB).
	maxFrameBytes = 20 << 20
	// signedImageTTL is how long the signed image links of a Markdown export
	// (images=signed) work: long enough to paste the page into a wiki.
	signedImageTTL = 7 * 24 * time.Hour
)

// GET /api/sop/{jobId}/frames/{nodeId}: the step's screenshot, under the
// SOP's owner rules. Only a node of the stored SOP whose screenshot is its
// own frame is served; the object path is built from the two ids alone.
func (s *server) getFrame(w http.ResponseWriter, r *http.Request) error {
	id, err := pathJobID(r)
	if err != nil {
		return err
	}
	node := chi.URLParam(r, "nodeId")
	if !jobs.SafeNodeID(node) {
		return &Error{Status: http.StatusNotFound, Message: msgFrameNotFound}
	}
	j, err := s.sopJob(r, id, node)
	if err != nil {
		return err
	}
	if j.FrameTag != "" && notModified(w, r, j.FrameTag) {
		return nil // the tag recorded when it was stored: no storage read
	}
	_, doc, _, err := s.loadSOP(r.Context(), id)
	if err != nil {
		return err
	}
	if !hasScreenshot(doc, node, id.FramePath(node)) {
		return &Error{Status: http.StatusNotFound, Message: msgFrameNotFound}
	}
	body, _, err := s.o.Objects.Download(r.Context(), id.FramePath(node))
	switch {
	case errors.Is(err, jobs.ErrObjectMissing):
		return &Error{Status: http.StatusNotFound, Message: msgFrameNotFound}
	case err != nil:
		return fromBackend("File storage", err, "Failed to read the screenshot")
	}
	defer body.Close()
	// Read whole (a few hundred KB) to be served with the tag of exactly
	// what is sent.
	data, err := io.ReadAll(io.LimitReader(body, maxFrameBytes))
	if err != nil {
		return fromBackend("File storage", errors.Join(jobs.ErrUnavailable, err), "Failed to read the screenshot")
	}
	tag := jobs.ETag(data)
	if notModified(w, r, tag) {
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "image/jpeg")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", `inline; filename="`+node+`.jpg"`)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("ETag", tag)
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(data); err != nil {
		s.log.WarnContext(r.Context(), "screenshot cut off", "job_id", id, "node", node, "error", err)
	}
	return nil
}

func hasScreenshot(doc *sop.Document, node, path string) bool {
	for _, n := range doc.Public.Nodes {
		if n.ID == node && n.Screenshot == path {
			return true
		}
	}
	return false
}

// screenshots lists the screenshot paths the document's nodes name.
func screenshots(doc *sop.Document) []string {
	var out []string
	for _, n := range doc.Public.Nodes {
		if n.Screenshot != "" {
			out = append(out, n.Screenshot)
		}
	}
	return out
}

// removeFrames deletes the screenshots of nodes an edit deleted. The edit
// is saved already: a failure leaves an object nothing links to, logged.
func (s *server) removeFrames(ctx context.Context, id jobs.ID, paths []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	tries := backoff.Backoff{Policy: removeTries}
	for {
		err := s.o.Objects.Remove(ctx, paths...)
		if err == nil {
			return
		}
		wait, again := tries.Next()
		if again && errors.Is(err, jobs.ErrUnavailable) && backoff.Sleep(ctx, wait) == nil {
			continue
		}
		s.log.WarnContext(ctx, "could not delete the screenshots of deleted steps", "job_id", id, "paths", paths, "error", err)
		return
	}
}

// removeTries paces removeFrames' tries while storage is unavailable:
// three in all, 200 ms and 400 ms apart.
var removeTries = backoff.Policy{First: 200 * time.Millisecond, Tries: 3}

// sopFormat is the representation a GET of the SOP asks for: "json" (the
// viewer's) or "md", from ?format=, else from Accept.
func sopFormat(r *http.Request) (string, error) {
	var q url.Values // none parsed when there is no query (the viewer's reads)
	if r.URL.RawQuery != "" {
		q = r.URL.Query()
	}
	switch f := q.Get("format"); f {
	case "md", "markdown":
		return "md", nil
	case "json":
	case "":
		for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/markdown") {
				return "md", nil
			}
		}
	default:
		return "", &Error{Status: http.StatusBadRequest, Message: `"format" must be json or md`}
	}
	if q.Has("images") {
		return "", &Error{Status: http.StatusBadRequest, Message: `"images" applies to the Markdown export only (format=md)`}
	}
	return "json", nil
}

// writeMarkdown answers the SOP as Markdown: screenshots linked to the
// frames endpoint, or with images=signed to signed storage URLs that work
// for signedImageTTL without credentials (for a page pasted into a wiki).
func (s *server) writeMarkdown(w http.ResponseWriter, r *http.Request, id jobs.ID, doc *sop.Document) error {
	image := func(n sop.Node) string {
		return "/api/sop/" + string(id) + "/frames/" + url.PathEscape(n.ID)
	}
	switch r.URL.Query().Get("images") {
	case "", "api":
	case "signed":
		// One request for every link; a screenshot storage no longer has
		// is left out of the page.
		signed, err := s.o.Objects.SignPublicDownloads(r.Context(), screenshots(doc), signedImageTTL)
		if err != nil {
			return fromBackend("File storage", err, "Failed to sign the screenshot links")
		}
		image = func(n sop.Node) string { return signed[n.Screenshot] }
	default:
		return &Error{Status: http.StatusBadRequest, Message: `"images" must be api or signed`}
	}
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("Content-Disposition", `inline; filename="sop-`+string(id)+`.md"`)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(sop.Markdown(doc, image))
	return err
}
