package supabasetest

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// The resumable (TUS 1.0.0) upload operations.
const (
	OpTusCreate Op = "tus-create" // POST /upload/resumable/sign (x-signature) or /upload/resumable (Bearer)
	OpTusHead   Op = "tus-head"   // HEAD /upload/resumable[/sign]/{id}
	OpTusPatch  Op = "tus-patch"  // PATCH /upload/resumable[/sign]/{id}
)

// TusChunk is the chunk size clients must send (the hosted rule): every
// PATCH but the one that completes the upload carries exactly this much.
const TusChunk = 6 << 20

type tusUpload struct {
	key, contentType string
	length, offset   int64
	file             string
	upsert           bool
}

// tusRoute maps the resumable endpoints (p is below /storage/v1).
func (s *Server) tusRoute(r *http.Request, p string) (Op, http.HandlerFunc) {
	rest, ok := strings.CutPrefix(p, "/upload/resumable")
	if !ok {
		return "", nil
	}
	signed := strings.HasPrefix(rest, "/sign")
	rest = strings.TrimPrefix(strings.TrimPrefix(rest, "/sign"), "/")
	switch {
	case rest == "" && r.Method == http.MethodPost && signed:
		return OpTusCreate, func(w http.ResponseWriter, r *http.Request) { s.tusCreate(w, r, "") }
	case rest == "" && r.Method == http.MethodPost:
		return OpTusCreate, s.authed(func(w http.ResponseWriter, r *http.Request, role string) { s.tusCreate(w, r, role) })
	case rest != "" && r.Method == http.MethodHead:
		return OpTusHead, func(w http.ResponseWriter, r *http.Request) { s.tusHead(w, rest) }
	case rest != "" && r.Method == http.MethodPatch:
		return OpTusPatch, func(w http.ResponseWriter, r *http.Request) { s.tusPatch(w, r, rest) }
	}
	return "", nil
}

func tusError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

// tusMetadata reads Upload-Metadata: "key base64,key base64".
func tusMetadata(h string) map[string]string {
	out := map[string]string{}
	for _, pair := range strings.Split(h, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(pair), " ")
		b, err := base64.StdEncoding.DecodeString(v)
		if err == nil {
			out[k] = string(b)
		}
	}
	return out
}

func (s *Server) tusCreate(w http.ResponseWriter, r *http.Request, role string) {
	if r.Header.Get("Tus-Resumable") != "1.0.0" {
		tusError(w, http.StatusPreconditionFailed, "Unsupported version")
		return
	}
	length, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil || length < 0 {
		tusError(w, http.StatusBadRequest, "Upload-Length is required")
		return
	}
	meta := tusMetadata(r.Header.Get("Upload-Metadata"))
	bucket, name := meta["bucketName"], meta["objectName"]
	key := bucket + "/" + name
	upsert := r.Header.Get("x-upsert") == "true"
	if role == "" { // the signed endpoint: the token allows exactly one object
		raw := r.Header.Get("x-signature")
		claims, err := s.parse(raw)
		if err != nil || raw == "" {
			writeError(w, http.StatusForbidden, "InvalidJWT", "invalid signature")
			return
		}
		if u, _ := claims["url"].(string); u != key {
			writeError(w, http.StatusForbidden, "InvalidSignature", "The url do not match the signature")
			return
		}
		upsert, _ = claims["upsert"].(bool)
	} else if role != "service_role" {
		writeError(w, http.StatusForbidden, "Unauthorized", "new row violates row-level security policy")
		return
	}
	s.mu.Lock()
	b, found := s.buckets[bucket]
	_, exists := s.objects[key]
	s.mu.Unlock()
	contentType := meta["contentType"]
	switch {
	case !found:
		writeError(w, http.StatusNotFound, "NoSuchBucket", "Bucket not found")
		return
	case exists && !upsert:
		writeError(w, http.StatusConflict, "KeyAlreadyExists", "The resource already exists")
		return
	case b.FileSizeLimit > 0 && length > b.FileSizeLimit:
		writeError(w, http.StatusRequestEntityTooLarge, "EntityTooLarge", "The object exceeded the maximum allowed size")
		return
	case !mimeAllowed(b.AllowedMimeTypes, contentType):
		writeError(w, http.StatusUnsupportedMediaType, "InvalidMimeType", "mime type "+contentType+" is not supported")
		return
	}
	f, err := s.tempFile()
	if err != nil {
		tusError(w, http.StatusInternalServerError, err.Error())
		return
	}
	f.Close()
	id := s.nextID()
	s.mu.Lock()
	if s.tus == nil {
		s.tus = map[string]*tusUpload{}
	}
	s.tus[id] = &tusUpload{key: key, contentType: contentType, length: length, file: f.Name(), upsert: upsert}
	s.mu.Unlock()
	base := strings.TrimSuffix(r.URL.Path, "/")
	w.Header().Set("Location", s.URL+base+"/"+id)
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) tusLookup(id string) *tusUpload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tus[id]
}

func (s *Server) tusHead(w http.ResponseWriter, id string) {
	u := s.tusLookup(id)
	if u == nil {
		tusError(w, http.StatusNotFound, "Upload not found")
		return
	}
	s.mu.Lock()
	offset := u.offset
	s.mu.Unlock()
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Upload-Offset", strconv.FormatInt(offset, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(u.length, 10))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) tusPatch(w http.ResponseWriter, r *http.Request, id string) {
	u := s.tusLookup(id)
	switch {
	case u == nil:
		tusError(w, http.StatusNotFound, "Upload not found")
		return
	case r.Header.Get("Content-Type") != "application/offset+octet-stream":
		tusError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/offset+octet-stream")
		return
	}
	offset, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	s.mu.Lock()
	current := u.offset
	s.mu.Unlock()
	if err != nil || offset != current {
		tusError(w, http.StatusConflict, "Upload-Offset conflict")
		return
	}
	f, err := os.OpenFile(u.file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tusError(w, http.StatusInternalServerError, err.Error())
		return
	}
	n, copyErr := io.Copy(f, io.LimitReader(r.Body, u.length-offset))
	f.Close()
	final := offset+n == u.length
	if !final && n != TusChunk && copyErr == nil {
		// What arrived is kept (a real server writes as it reads), but a
		// client sending other sizes breaks the hosted rule.
		s.mu.Lock()
		u.offset += n
		s.mu.Unlock()
		tusError(w, http.StatusBadRequest, "chunks must be 6 MiB (6291456 bytes), except the last")
		return
	}
	s.mu.Lock()
	u.offset += n
	s.mu.Unlock()
	if copyErr != nil {
		return // the client went away; the bytes it sent are kept for a resume
	}
	if final {
		b, _ := os.ReadFile(u.file)
		sum := md5.Sum(b)
		s.mu.Lock()
		_, exists := s.objects[u.key]
		delete(s.tus, id)
		s.mu.Unlock()
		if exists && !u.upsert {
			writeError(w, http.StatusConflict, "KeyAlreadyExists", "The resource already exists")
			return
		}
		s.register(u.key, u.file, u.length, u.contentType, hex.EncodeToString(sum[:]))
		if inspect := s.inspector(); inspect != nil {
			inspect(u.key, u.file)
		}
	}
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Upload-Offset", strconv.FormatInt(offset+n, 10))
	w.WriteHeader(http.StatusNoContent)
}
