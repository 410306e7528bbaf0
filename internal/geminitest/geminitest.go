// Package geminitest is a stand-in for the Gemini REST API (Files API with
// the resumable upload protocol, file polling and deletion, generateContent)
// that the real google.golang.org/genai client runs against. It checks what
// the SDK sends (API key header, MIME type, a response schema, the file being
// ACTIVE) and answers from a script of replies. For tests only.
package geminitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running stand-in; point the SDK's BaseURL at URL.
type Server struct {
	URL    string
	APIKey string

	t testing.TB

	mu       sync.Mutex
	files    map[string]*file
	uploads  map[string]*upload
	replies  []Reply
	requests []GenerateRequest
	deleted  []string
	seq      int
	// ActivateAfter is how many polls a file stays PROCESSING (default 1).
	ActivateAfter int
	// FileOutcome: "" (becomes ACTIVE), "FAILED", or "STUCK" (never leaves PROCESSING).
	FileOutcome string
	// fallback answers generateContent once the script is used up (unset: a 500).
	fallback *Reply
	// blocked holds generateContent calls until released.
	blocked chan struct{}
	entered chan struct{}
	// front answers an operation's requests in place of the stand-in
	// (Intercept).
	front map[Op]func(http.ResponseWriter, *http.Request) bool
}

// Op is one operation of the protocol, for Intercept.
type Op string

// The operations.
const (
	OpUploadStart Op = "upload-start" // POST /upload/v1beta/files
	OpUploadChunk Op = "upload-chunk" // POST /upload/v1beta/files?upload_id=
	OpFileGet     Op = "file-get"     // GET /v1beta/files/{name}
	OpFileDelete  Op = "file-delete"  // DELETE /v1beta/files/{name}
	OpGenerate    Op = "generate"     // POST /v1beta/models/{model}:generateContent
)

// Intercept has answer see op's requests first: one it answers itself
// (true) goes no further, as a gateway, a network or a server in trouble
// would answer it (Hang, CutOff, GatewayError); false lets it through.
func (s *Server) Intercept(op Op, answer func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.front == nil {
		s.front = map[Op]func(http.ResponseWriter, *http.Request) bool{}
	}
	s.front[op] = answer
}

// Hang answers nothing until the client gives up.
func Hang(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body) // so that the client's going away is seen
	<-r.Context().Done()
}

// CutOff starts a 200 whose body, longer by its Content-Length, stops after
// partial: the connection is closed under it.
func CutOff(w http.ResponseWriter, partial string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(partial)+5000))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, partial)
	w.(http.Flusher).Flush()
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

// GatewayError answers as a load balancer in front of the API does: an
// HTML page, none of the API's headers or JSON.
func GatewayError(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "<html><body>"+strconv.Itoa(status)+" "+http.StatusText(status)+"</body></html>")
}

// BlockGenerate holds generateContent calls until release; entered is closed
// when the first one arrives.
func (s *Server) BlockGenerate() (entered <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked, s.entered = make(chan struct{}), make(chan struct{})
	b := s.blocked
	var once sync.Once
	return s.entered, func() { once.Do(func() { close(b) }) }
}

type file struct {
	name, uri, mime, state string
	size                   int64
	polls                  int
	expires                time.Time
}

type upload struct {
	mime, display string
	received      int64
}

// GenerateRequest is what a generateContent call carried.
type GenerateRequest struct {
	Model      string
	FileURI    string
	FPS        float64
	Prompt     string
	System     string
	HasSchema  bool
	Schema     json.RawMessage // responseJsonSchema as sent
	Resolution string
}

// Reply is one scripted answer to generateContent.
type Reply struct {
	Status int
	Body   string
}

// New starts a stand-in accepting key.
func New(t testing.TB, key string) *Server {
	s := &Server{t: t, APIKey: key, files: map[string]*file{}, uploads: map[string]*upload{}, ActivateAfter: 1}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = srv.URL
	t.Cleanup(srv.Close)
	return s
}

// Answer sets the reply to every generateContent call once the script is
// used up (before it, a 500).
func (s *Server) Answer(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = &r
}

// Script appends replies for the next generateContent calls.
func (s *Server) Script(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = append(s.replies, r...)
}

// Requests returns the generateContent calls received.
func (s *Server) Requests() []GenerateRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]GenerateRequest(nil), s.requests...)
}

// Deleted lists the files deleted.
func (s *Server) Deleted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.deleted...)
}

// Files lists the names of files that exist.
func (s *Server) Files() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.files {
		out = append(out, n)
	}
	return out
}

// Uploads counts files created.
func (s *Server) Uploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// JSON is a successful answer whose text is doc.
func JSON(doc string) Reply { return Text(doc, "STOP") }

// Text is an answer with text and a finish reason (MAX_TOKENS: cut off).
func Text(text, finish string) Reply {
	b, _ := json.Marshal(map[string]any{
		"candidates": []any{map[string]any{"content": map[string]any{"role": "model", "parts": []any{map[string]any{"text": text}}},
			"finishReason": finish}},
		"usageMetadata": map[string]any{"promptTokenCount": 1000, "candidatesTokenCount": 200, "totalTokenCount": 1200,
			"promptTokensDetails": []any{map[string]any{"modality": "VIDEO", "tokenCount": 774}, map[string]any{"modality": "TEXT", "tokenCount": 226}}},
	})
	return Reply{Status: 200, Body: string(b)}
}

// Blocked is a prompt blocked by the safety filter: no candidates, no error.
func Blocked() Reply {
	return Reply{Status: 200, Body: `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":1000,"totalTokenCount":1000}}`}
}

// Error is an error answer; retryDelay ("2s") adds a google.rpc.RetryInfo.
func Error(code int, status, message, retryDelay string) Reply {
	details := []any{}
	if retryDelay != "" {
		details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retryDelay})
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": message, "status": status, "details": details}})
	return Reply{Status: code, Body: string(b)}
}

func writeError(w http.ResponseWriter, code int, status, message string, details ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if details == nil {
		details = []any{}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": message, "status": status, "details": details}})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("x-goog-api-key") != s.APIKey {
		writeError(w, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
			map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"})
		return
	}
	p := r.URL.Path
	var op Op
	var h func()
	switch {
	case p == "/upload/v1beta/files" && r.Method == http.MethodPost && r.URL.Query().Get("upload_id") == "":
		op, h = OpUploadStart, func() { s.startUpload(w, r) }
	case p == "/upload/v1beta/files" && r.Method == http.MethodPost:
		op, h = OpUploadChunk, func() { s.uploadChunk(w, r) }
	case strings.HasPrefix(p, "/v1beta/files/") && r.Method == http.MethodGet:
		op, h = OpFileGet, func() { s.getFile(w, strings.TrimPrefix(p, "/v1beta/")) }
	case strings.HasPrefix(p, "/v1beta/files/") && r.Method == http.MethodDelete:
		op, h = OpFileDelete, func() { s.deleteFile(w, strings.TrimPrefix(p, "/v1beta/")) }
	case strings.HasPrefix(p, "/v1beta/models/") && strings.HasSuffix(p, ":generateContent") && r.Method == http.MethodPost:
		op, h = OpGenerate, func() {
			s.generate(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/v1beta/models/"), ":generateContent"))
		}
	default:
		writeError(w, 404, "NOT_FOUND", "no route "+r.Method+" "+p)
		return
	}
	s.mu.Lock()
	front := s.front[op]
	s.mu.Unlock()
	if front != nil && front(w, r) {
		return
	}
	h()
}

func (s *Server) startUpload(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Goog-Upload-Protocol") != "resumable" || r.Header.Get("X-Goog-Upload-Command") != "start" {
		writeError(w, 400, "INVALID_ARGUMENT", "expected a resumable upload start")
		return
	}
	mime := r.Header.Get("X-Goog-Upload-Header-Content-Type")
	if mime == "" {
		writeError(w, 400, "INVALID_ARGUMENT", "missing the upload's MIME type")
		return
	}
	var body struct {
		File struct {
			DisplayName string `json:"displayName"`
		} `json:"file"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	s.seq++
	id := "u" + strconv.Itoa(s.seq)
	s.uploads[id] = &upload{mime: mime, display: body.File.DisplayName}
	s.mu.Unlock()
	// A real upload URL points at another host; the SDK swaps in BaseURL's.
	w.Header().Set("X-Goog-Upload-URL", "https://upload.example.invalid/upload/v1beta/files?upload_id="+id+"&upload_protocol=resumable")
	w.Header().Set("X-Goog-Upload-Status", "active")
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

func (s *Server) uploadChunk(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("upload_id")
	n, _ := io.Copy(io.Discard, r.Body)
	offset, _ := strconv.ParseInt(r.Header.Get("X-Goog-Upload-Offset"), 10, 64)
	cmd := r.Header.Get("X-Goog-Upload-Command")
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uploads[id]
	if u == nil || offset != u.received {
		w.Header().Set("X-Goog-Upload-Status", "final")
		writeError(w, 400, "INVALID_ARGUMENT", "unknown upload or wrong offset")
		return
	}
	u.received += n
	if !strings.Contains(cmd, "finalize") {
		w.Header().Set("X-Goog-Upload-Status", "active")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	}
	name := "files/" + id
	f := &file{name: name, uri: s.URL + "/v1beta/" + name, mime: u.mime, state: "PROCESSING", size: u.received,
		expires: time.Now().Add(48 * time.Hour)}
	s.files[name] = f
	delete(s.uploads, id)
	w.Header().Set("X-Goog-Upload-Status", "final")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"file": f.json()})
}

func (f *file) json() map[string]any {
	m := map[string]any{"name": f.name, "uri": f.uri, "mimeType": f.mime, "sizeBytes": strconv.FormatInt(f.size, 10),
		"state": f.state, "expirationTime": f.expires.UTC().Format(time.RFC3339Nano), "source": "UPLOADED"}
	if f.state == "FAILED" {
		m["error"] = map[string]any{"code": 3, "message": "The video could not be processed."}
	}
	return m
}

func (s *Server) getFile(w http.ResponseWriter, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[name]
	if f == nil {
		writeError(w, 404, "NOT_FOUND", "File "+name+" not found")
		return
	}
	f.polls++
	if f.state == "PROCESSING" && f.polls >= s.ActivateAfter {
		switch s.FileOutcome {
		case "":
			f.state = "ACTIVE"
		case "FAILED":
			f.state = "FAILED"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(f.json())
}

func (s *Server) deleteFile(w http.ResponseWriter, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files[name] == nil {
		writeError(w, 404, "NOT_FOUND", "File "+name+" not found")
		return
	}
	delete(s.files, name)
	s.deleted = append(s.deleted, name)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

// Expire makes a file look like it expires at t (to test reuse rules).
func (s *Server) Expire(name string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[name]; f != nil {
		f.expires = t
	}
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, model string) {
	var body struct {
		Contents []struct {
			Parts []struct {
				Text     string `json:"text"`
				FileData *struct {
					FileURI  string `json:"fileUri"`
					MIMEType string `json:"mimeType"`
				} `json:"fileData"`
				VideoMetadata *struct {
					FPS float64 `json:"fps"`
				} `json:"videoMetadata"`
			} `json:"parts"`
		} `json:"contents"`
		SystemInstruction *struct {
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"systemInstruction"`
		GenerationConfig struct {
			ResponseMIMEType   string          `json:"responseMimeType"`
			ResponseSchema     json.RawMessage `json:"responseSchema"`
			ResponseJSONSchema json.RawMessage `json:"responseJsonSchema"`
			MediaResolution    string          `json:"mediaResolution"`
		} `json:"generationConfig"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, 400, "INVALID_ARGUMENT", "bad JSON: "+err.Error())
		return
	}
	req := GenerateRequest{Model: model, Resolution: body.GenerationConfig.MediaResolution,
		HasSchema: len(body.GenerationConfig.ResponseSchema) > 0 || len(body.GenerationConfig.ResponseJSONSchema) > 0,
		Schema:    body.GenerationConfig.ResponseJSONSchema}
	for _, c := range body.Contents {
		for _, p := range c.Parts {
			if p.FileData != nil {
				req.FileURI = p.FileData.FileURI
			}
			if p.VideoMetadata != nil {
				req.FPS = p.VideoMetadata.FPS
			}
			req.Prompt += p.Text
		}
	}
	if body.SystemInstruction != nil {
		for _, p := range body.SystemInstruction.Parts {
			req.System += p.Text
		}
	}
	if !req.HasSchema || body.GenerationConfig.ResponseMIMEType != "application/json" {
		writeError(w, 400, "INVALID_ARGUMENT", "structured output expected: a response schema and application/json")
		return
	}
	s.mu.Lock()
	var f *file
	for _, x := range s.files {
		if x.uri == req.FileURI {
			f = x
		}
	}
	if f == nil || f.state != "ACTIVE" {
		s.mu.Unlock()
		writeError(w, 400, "FAILED_PRECONDITION", fmt.Sprintf("The File %s is not in an ACTIVE state and usage is not allowed.", req.FileURI))
		return
	}
	s.requests = append(s.requests, req)
	if blocked := s.blocked; blocked != nil {
		if s.entered != nil {
			close(s.entered)
			s.entered = nil
		}
		s.mu.Unlock()
		select {
		case <-blocked:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
	}
	var reply Reply
	switch {
	case len(s.replies) > 0:
		reply, s.replies = s.replies[0], s.replies[1:]
	case s.fallback != nil:
		reply = *s.fallback
	default:
		s.mu.Unlock()
		writeError(w, 500, "INTERNAL", "no scripted reply")
		return
	}
	s.mu.Unlock()
	if problems := offSchema(reply, body.GenerationConfig.ResponseJSONSchema); len(problems) > 0 {
		// Structured output never answers outside the schema: a script that
		// does tests something the real service cannot send.
		s.t.Errorf("geminitest: a scripted answer does not match the request's response schema:\n  %s", strings.Join(problems, "\n  "))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(reply.Status)
	_, _ = io.WriteString(w, reply.Body)
}

// offSchema checks a complete JSON answer (finish reason STOP) against the
// response schema the request carried; answers cut off or not JSON at all are
// what the model can send and are left alone.
func offSchema(reply Reply, rawSchema json.RawMessage) []string {
	var resp struct {
		Candidates []struct {
			Content struct {
				Parts []struct {
					Text string `json:"text"`
				} `json:"parts"`
			} `json:"content"`
			FinishReason string `json:"finishReason"`
		} `json:"candidates"`
	}
	if reply.Status != 200 || len(rawSchema) == 0 || json.Unmarshal([]byte(reply.Body), &resp) != nil || len(resp.Candidates) == 0 {
		return nil
	}
	c := resp.Candidates[0]
	if c.FinishReason != "STOP" || len(c.Content.Parts) == 0 {
		return nil
	}
	var answer, schema any
	if json.Unmarshal([]byte(c.Content.Parts[0].Text), &answer) != nil || json.Unmarshal(rawSchema, &schema) != nil {
		return nil
	}
	var problems []string
	conform(answer, schema, "$", &problems)
	return problems
}

// conform checks v against the JSON Schema subset a response schema uses:
// type (object, array, string, number, integer, boolean), properties,
// required, items and enum; an object has no properties beyond its schema's.
func conform(v, schema any, at string, problems *[]string) {
	sch, _ := schema.(map[string]any)
	bad := func(format string, args ...any) { *problems = append(*problems, at+": "+fmt.Sprintf(format, args...)) }
	switch sch["type"] {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			bad("want an object")
			return
		}
		props, _ := sch["properties"].(map[string]any)
		required, _ := sch["required"].([]any)
		for _, r := range required {
			if _, ok := obj[fmt.Sprint(r)]; !ok {
				bad("missing required %q", r)
			}
		}
		for k, val := range obj {
			if p, ok := props[k]; ok {
				conform(val, p, at+"."+k, problems)
			} else {
				bad("%q is not in the schema", k)
			}
		}
	case "array":
		list, ok := v.([]any)
		if !ok {
			bad("want an array")
			return
		}
		for i, el := range list {
			conform(el, sch["items"], fmt.Sprintf("%s[%d]", at, i), problems)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string")
			return
		}
		if enum, ok := sch["enum"].([]any); ok && !slices.Contains(enum, any(str)) {
			bad("%q is not one of %v", str, enum)
		}
	case "number", "integer":
		if _, ok := v.(float64); !ok {
			bad("want a number")
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean")
		}
	}
}

// SampleSOP is a valid model answer in the flat response schema the
// worker asks for, about a recording of at least 2 seconds: two steps are
// shown (at 0 s and 1 s), the others narrated or inferred.
const SampleSOP = `{
 "title": "Refund a duplicate charge", "goal": "The customer gets the duplicate back", "purpose": "Consistent refunds",
 "owners": ["support"],
 "triggers": [
  {"type": "event", "config": "helpdesk: ticket tagged duplicate-charge", "description": "A duplicate-charge ticket arrives (00:00:02)"},
  {"type": "cron", "config": "0 9 * * 1-5", "description": "Every weekday at 09:00 the agent clears the refund queue (00:00:05)"}
 ],
 "nodes": [
  {"id": "open", "type": "task", "label": "Open the ticket", "intent": "Read the report", "context": "00:00:00 helpdesk", "parent_id": "", "timestamp": "00:00:00", "evidence": "shown"},
  {"id": "check", "type": "decision", "label": "Charged twice?", "intent": "Only refund duplicates", "context": "payments", "parent_id": "", "timestamp": "", "evidence": "narrated"},
  {"id": "each", "type": "loop", "label": "For each extra charge", "intent": "Refund all", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred", "iterator": "extra charges", "exit_condition": "none left"},
  {"id": "refund", "type": "task", "label": "Refund it", "intent": "Return the money", "context": "00:00:01 Refund button", "parent_id": "each", "timestamp": "00:00:01", "evidence": "shown"},
  {"id": "close", "type": "end", "label": "Close the ticket", "intent": "Done", "context": "", "parent_id": "", "timestamp": "", "evidence": "narrated"}
 ],
 "edges": [
  {"source": "open", "target": "check", "condition": "start"},
  {"source": "check", "target": "each", "condition": "yes"},
  {"source": "check", "target": "close", "condition": "no"},
  {"source": "refund", "target": "refund", "condition": "next"},
  {"source": "each", "target": "close", "condition": "all_processed"}
 ],
 "variables": [{"name": "order_id", "description": "The order"}],
 "clarifications": [{"question": "Is there an approval limit?", "importance": "medium"}],
 "skills": [{"id": "pay-ui", "app": "Payments", "method_type": "ui", "performance_hint": ""}],
 "steps": [{"node_id": "refund", "primary_skill": "pay-ui"}]
}`
