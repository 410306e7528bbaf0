package supabasetest

import (
	"cmp"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type object struct {
	id           string
	bucket, name string
	file         string
	size         int64
	contentType  string
	cacheControl string
	etag         string
	created      time.Time
	updated      time.Time
}

func (o *object) info() map[string]any {
	return map[string]any{
		"id": o.id, "name": o.name, "version": o.id, "bucket_id": o.bucket, "size": o.size,
		"content_type": o.contentType, "cache_control": o.cacheControl, "etag": o.etag,
		"metadata": map[string]any{}, "last_modified": o.updated.Format(time.RFC3339Nano),
		"created_at": o.created.Format(time.RFC3339Nano),
	}
}

func (o *object) listMetadata() map[string]any {
	return map[string]any{"eTag": o.etag, "size": o.size, "mimetype": o.contentType,
		"cacheControl": o.cacheControl, "lastModified": o.updated.Format(time.RFC3339Nano),
		"contentLength": o.size, "httpStatusCode": 200}
}

// ObjectInfo describes a stored object, for test assertions.
type ObjectInfo struct {
	Size        int64
	ContentType string
	File        string // where its bytes are on disk
}

// Object returns what is stored at bucket/path ("videos/raw/x.mp4").
func (s *Server) Object(key string) (ObjectInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return ObjectInfo{}, false
	}
	return ObjectInfo{Size: o.size, ContentType: o.contentType, File: o.file}, true
}

// Delete removes the object at bucket/path directly, as a person could in
// the dashboard.
func (s *Server) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objects[key]; ok {
		os.Remove(o.file)
		delete(s.objects, key)
	}
}

// Put stores data at bucket/path directly, bypassing bucket limits.
func (s *Server) Put(key string, data []byte, contentType string) {
	f, err := s.tempFile()
	if err != nil {
		panic(err)
	}
	_, err = f.Write(data)
	f.Close()
	if err != nil {
		panic(err)
	}
	sum := md5.Sum(data)
	s.register(key, f.Name(), int64(len(data)), contentType, hex.EncodeToString(sum[:]))
}

// PutFile stores a copy of the file at path under bucket/path (for objects
// too large to hold in memory).
func (s *Server) PutFile(key, path, contentType string) {
	src, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer src.Close()
	f, err := s.tempFile()
	if err != nil {
		panic(err)
	}
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), src)
	f.Close()
	if err != nil {
		panic(err)
	}
	s.register(key, f.Name(), n, contentType, hex.EncodeToString(h.Sum(nil)))
}

// Seed stores an object of size zero bytes (a sparse file, instant at any
// size) at bucket/path, as an upload that skipped the bucket's size check
// (chunked) would leave it.
func (s *Server) Seed(key string, size int64, contentType string) {
	f, err := s.tempFile()
	if err != nil {
		panic(err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		panic(err)
	}
	s.register(key, f.Name(), size, contentType, "sparse")
}

// maxRemove is how many objects one delete may name (Supabase's limit).
const maxRemove = 1000

// writtenBefore is the cache-control of objects a test puts in place, as
// supabase-js uploads them by default (and as this service did before it
// sent no-cache).
const writtenBefore = "max-age=3600"

func (s *Server) register(key, file string, size int64, contentType, md5hex string) {
	s.registerCached(key, file, size, contentType, md5hex, writtenBefore)
}

// registerCached records an object with the Cache-Control its upload set.
func (s *Server) registerCached(key, file string, size int64, contentType, md5hex, cacheControl string) {
	bucket, name, _ := strings.Cut(key, "/")
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := &object{id: s.nextID(), bucket: bucket, name: name, file: file, size: size,
		contentType: contentType, cacheControl: cacheControl, etag: `"` + md5hex + `"`, created: now, updated: now}
	if old, ok := s.objects[key]; ok {
		o.created = old.created
		os.Remove(old.file)
	}
	s.objects[key] = o
}

func (s *Server) lookup(key string) *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects[key]
}

func canRead(role, bucket string) bool {
	// The migration's only policy: authenticated users may select from videos.
	return role == "service_role" || (role == "authenticated" && bucket == "videos")
}

func splitKey(rest string) (bucket, name string, ok bool) {
	bucket, name, ok = strings.Cut(rest, "/")
	return bucket, name, ok && bucket != "" && name != "" && !strings.Contains(name, "..")
}

func mimeAllowed(allowed []string, contentType string) bool {
	if len(allowed) == 0 {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	for _, a := range allowed {
		if a == mt || (strings.HasSuffix(a, "/*") && strings.HasPrefix(mt, strings.TrimSuffix(a, "*"))) {
			return true
		}
	}
	return false
}

// store streams an upload into place, with the bucket's checks as the real
// server runs them: the size limit only when Content-Length is known.
func (s *Server) store(w http.ResponseWriter, r *http.Request, bucket, name string, upsert bool) {
	s.mu.Lock()
	b, ok := s.buckets[bucket]
	_, exists := s.objects[bucket+"/"+name]
	s.mu.Unlock()
	if !ok {
		writeError(w, 404, "NoSuchBucket", "Bucket not found")
		return
	}
	if exists && !upsert {
		writeError(w, 409, "KeyAlreadyExists", "The resource already exists")
		return
	}
	body := io.Reader(r.Body)
	contentType := r.Header.Get("Content-Type")
	if strings.HasPrefix(contentType, "multipart/form-data") {
		mr, err := r.MultipartReader()
		if err != nil {
			writeError(w, 400, "InvalidRequest", err.Error())
			return
		}
		part, err := mr.NextPart()
		if err != nil {
			writeError(w, 400, "InvalidRequest", "no file in the form")
			return
		}
		body, contentType = part, part.Header.Get("Content-Type")
	}
	if contentType == "" {
		contentType = "text/plain;charset=UTF-8"
	}
	if b.FileSizeLimit > 0 && r.ContentLength > b.FileSizeLimit {
		writeError(w, 413, "EntityTooLarge", "The object exceeded the maximum allowed size")
		return
	}
	if !mimeAllowed(b.AllowedMimeTypes, contentType) {
		writeError(w, 415, "InvalidMimeType", "mime type "+contentType+" is not supported")
		return
	}
	f, err := s.tempFile()
	if err != nil {
		writeError(w, 500, "InternalError", err.Error())
		return
	}
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(f, h), body)
	f.Close()
	if err != nil {
		os.Remove(f.Name())
		writeError(w, 400, "InvalidRequest", "upload interrupted: "+err.Error())
		return
	}
	s.mu.Lock()
	_, exists = s.objects[bucket+"/"+name]
	s.mu.Unlock()
	if exists && !upsert { // lost a race with another upload
		os.Remove(f.Name())
		writeError(w, 409, "KeyAlreadyExists", "The resource already exists")
		return
	}
	// The object keeps the Cache-Control its upload sent, as Storage
	// serves it back; none is no-cache.
	s.registerCached(bucket+"/"+name, f.Name(), n, contentType, hex.EncodeToString(h.Sum(nil)), cmp.Or(r.Header.Get("Cache-Control"), "no-cache"))
	o := s.lookup(bucket + "/" + name)
	if inspect := s.inspector(); inspect != nil {
		inspect(bucket+"/"+name, o.file)
	}
	writeJSON(w, map[string]string{"Key": bucket + "/" + name, "Id": o.id})
}

// writableKey splits bucket/name for a write, which only the service role may
// make (no insert policy exists); it answers the error itself.
func writableKey(w http.ResponseWriter, role, rest string) (bucket, name string, ok bool) {
	bucket, name, ok = splitKey(rest)
	if !ok {
		writeError(w, 400, "InvalidKey", "Invalid key: "+rest)
		return "", "", false
	}
	if role != "service_role" {
		writeError(w, 403, "Unauthorized", "new row violates row-level security policy")
		return "", "", false
	}
	return bucket, name, true
}

func (s *Server) signUpload(w http.ResponseWriter, r *http.Request, role, rest string) {
	bucket, name, ok := writableKey(w, role, rest)
	if !ok {
		return
	}
	s.mu.Lock()
	_, found := s.buckets[bucket]
	s.mu.Unlock()
	if !found {
		writeError(w, 404, "NoSuchBucket", "Bucket not found")
		return
	}
	tok := s.sign(jwt.MapClaims{"url": bucket + "/" + name, "upsert": r.Header.Get("x-upsert") == "true",
		"iat": time.Now().Unix(), "exp": time.Now().Add(s.UploadURLExpiry).Unix()})
	writeJSON(w, map[string]string{"url": "/object/upload/sign/" + bucket + "/" + name + "?token=" + tok, "token": tok})
}

// checkToken validates a signed-URL token for bucket/name; it writes the
// error and returns nil when the token does not allow it.
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request, key, expiredMsg string) jwt.MapClaims {
	raw := r.URL.Query().Get("token")
	if raw == "" {
		writeError(w, 400, "InvalidJWT", "Missing token")
		return nil
	}
	claims, err := s.parse(raw)
	if err != nil {
		msg := err.Error()
		if msg == "jwt expired" {
			msg = expiredMsg
		}
		writeError(w, 400, "InvalidJWT", msg)
		return nil
	}
	if u, _ := claims["url"].(string); u != key {
		writeError(w, 400, "InvalidSignature", "The url do not match the signature")
		return nil
	}
	return claims
}

func (s *Server) signedUpload(w http.ResponseWriter, r *http.Request, rest string) {
	bucket, name, ok := splitKey(rest)
	if !ok {
		writeError(w, 400, "InvalidKey", "Invalid key: "+rest)
		return
	}
	claims := s.checkToken(w, r, bucket+"/"+name, `"exp" claim timestamp check failed`)
	if claims == nil {
		return
	}
	upsert, _ := claims["upsert"].(bool)
	s.store(w, r, bucket, name, upsert)
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request, role, rest string) {
	bucket, name, ok := writableKey(w, role, rest)
	if !ok {
		return
	}
	// PUT is an update (upsert); POST honours x-upsert.
	s.store(w, r, bucket, name, r.Method == http.MethodPut || r.Header.Get("x-upsert") == "true")
}

func (s *Server) info(w http.ResponseWriter, _ *http.Request, role, rest string) {
	bucket, name, ok := splitKey(rest)
	o := s.lookup(bucket + "/" + name)
	if !ok || o == nil || !canRead(role, bucket) {
		writeError(w, 404, "NoSuchKey", "Object not found")
		return
	}
	writeJSON(w, o.info())
}

// serveObject streams an object with Range support (206, 416).
func serveObject(w http.ResponseWriter, r *http.Request, o *object) {
	f, err := os.Open(o.file)
	if err != nil {
		writeError(w, 500, "InternalError", err.Error())
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", o.contentType)
	w.Header().Set("ETag", o.etag)
	w.Header().Set("Cache-Control", o.cacheControl)
	http.ServeContent(w, r, "", o.updated, f)
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, role, rest string) {
	bucket, name, ok := splitKey(rest)
	o := s.lookup(bucket + "/" + name)
	if !ok || o == nil || !canRead(role, bucket) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusBadRequest) // the real server: 400, empty body
			return
		}
		writeError(w, 404, "NoSuchKey", "Object not found")
		return
	}
	serveObject(w, r, o)
}

func (s *Server) signDownload(w http.ResponseWriter, r *http.Request, role, rest string) {
	bucket, name, ok := splitKey(rest)
	var body struct {
		ExpiresIn int `json:"expiresIn"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ExpiresIn < 1 {
		writeError(w, 400, "InvalidRequest", "body/expiresIn must be >= 1")
		return
	}
	if !ok || s.lookup(bucket+"/"+name) == nil || !canRead(role, bucket) {
		writeError(w, 404, "NoSuchKey", "Object not found")
		return
	}
	writeJSON(w, map[string]string{"signedURL": s.signedURL(bucket, name, body.ExpiresIn)})
}

// signedURL is the download URL, relative to the storage base, that reads
// bucket/name without credentials for expiresIn seconds.
func (s *Server) signedURL(bucket, name string, expiresIn int) string {
	tok := s.sign(jwt.MapClaims{"url": bucket + "/" + name, "iat": time.Now().Unix(),
		"exp": time.Now().Add(time.Duration(expiresIn) * time.Second).Unix()})
	return "/object/sign/" + bucket + "/" + name + "?token=" + tok
}

// signDownloads signs many paths at once, as storage v1.70's getSignedURLs
// does: an answer per path, in the request's order, with an error and a
// null URL for one that does not exist or that the caller may not read.
func (s *Server) signDownloads(w http.ResponseWriter, r *http.Request, role, bucket string) {
	var body struct {
		ExpiresIn int      `json:"expiresIn"`
		Paths     []string `json:"paths"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ExpiresIn < 1 || len(body.Paths) == 0 {
		writeError(w, 400, "InvalidRequest", "body must have expiresIn >= 1 and at least one path")
		return
	}
	type signed struct {
		Error     *string `json:"error"`
		Path      string  `json:"path"`
		SignedURL *string `json:"signedURL"`
	}
	out := make([]signed, len(body.Paths))
	for i, name := range body.Paths {
		out[i].Path = name
		if s.lookup(bucket+"/"+name) == nil || !canRead(role, bucket) {
			msg := "Either the object does not exist or you do not have access to it"
			out[i].Error = &msg
			continue
		}
		u := s.signedURL(bucket, name, body.ExpiresIn)
		out[i].SignedURL = &u
	}
	writeJSON(w, out)
}

func (s *Server) signedDownload(w http.ResponseWriter, r *http.Request, rest string) {
	bucket, name, ok := splitKey(rest)
	if !ok {
		writeError(w, 400, "InvalidKey", "Invalid key: "+rest)
		return
	}
	if s.checkToken(w, r, bucket+"/"+name, "jwt expired") == nil {
		return
	}
	o := s.lookup(bucket + "/" + name)
	if o == nil {
		writeError(w, 404, "NoSuchKey", "Object not found")
		return
	}
	serveObject(w, r, o)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, role, bucket string) {
	var body struct {
		Prefix string `json:"prefix"`
		Search string `json:"search"`
		Limit  int    `json:"limit"`
		Offset int    `json:"offset"`
		SortBy struct {
			Column string `json:"column"`
			Order  string `json:"order"`
		} `json:"sortBy"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, 400, "InvalidRequest", "body must be object")
		return
	}
	if body.Limit <= 0 {
		body.Limit = 100
	}
	folder := strings.Trim(body.Prefix, "/")
	type entry struct {
		name string
		obj  *object
	}
	seen := map[string]bool{}
	var entries []entry
	s.mu.Lock()
	for _, o := range s.objects {
		if o.bucket != bucket || !canRead(role, bucket) {
			continue
		}
		rel := o.name
		if folder != "" {
			var ok bool
			if rel, ok = strings.CutPrefix(o.name, folder+"/"); !ok {
				continue
			}
		}
		if !strings.HasPrefix(strings.ToLower(rel), strings.ToLower(body.Search)) {
			continue
		}
		if dir, _, nested := strings.Cut(rel, "/"); nested {
			if !seen[dir] {
				seen[dir] = true
				entries = append(entries, entry{name: dir})
			}
			continue
		}
		entries = append(entries, entry{name: rel, obj: o})
	}
	s.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool {
		if body.SortBy.Order == "desc" {
			return entries[i].name > entries[j].name
		}
		return entries[i].name < entries[j].name
	})
	out := []map[string]any{}
	for i, e := range entries {
		if i < body.Offset || len(out) >= body.Limit {
			continue
		}
		if e.obj == nil {
			out = append(out, map[string]any{"name": e.name, "id": nil, "updated_at": nil, "created_at": nil,
				"last_accessed_at": nil, "metadata": nil})
			continue
		}
		out = append(out, map[string]any{"name": e.name, "id": e.obj.id,
			"updated_at": e.obj.updated.Format(time.RFC3339Nano), "created_at": e.obj.created.Format(time.RFC3339Nano),
			"last_accessed_at": e.obj.updated.Format(time.RFC3339Nano), "metadata": e.obj.listMetadata()})
	}
	writeJSON(w, out)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, role, rest string) {
	if role != "service_role" {
		writeError(w, 403, "Unauthorized", "new row violates row-level security policy")
		return
	}
	if bucket, name, ok := splitKey(rest); ok {
		s.mu.Lock()
		o, found := s.objects[bucket+"/"+name]
		delete(s.objects, bucket+"/"+name)
		s.mu.Unlock()
		if !found {
			writeError(w, 404, "NoSuchKey", "Object not found")
			return
		}
		os.Remove(o.file)
		writeJSON(w, map[string]string{"message": "Successfully deleted"})
		return
	}
	bucket := strings.Trim(rest, "/")
	var body struct {
		Prefixes []string `json:"prefixes"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Prefixes) == 0 {
		writeError(w, 400, "InvalidRequest", "body must have required property 'prefixes'")
		return
	}
	if len(body.Prefixes) > maxRemove { // the storage server's schema
		writeError(w, 400, "InvalidRequest", "body/prefixes must NOT have more than 1000 items")
		return
	}
	out := []map[string]any{}
	s.mu.Lock()
	for _, p := range body.Prefixes {
		key := bucket + "/" + path.Clean(strings.TrimPrefix(p, "/"))
		if o, ok := s.objects[key]; ok {
			delete(s.objects, key)
			os.Remove(o.file)
			out = append(out, o.info())
		}
	}
	s.mu.Unlock()
	writeJSON(w, out)
}

func (s *Server) bucketInfo(w http.ResponseWriter, _ *http.Request, role, id string) {
	s.mu.Lock()
	b, ok := s.buckets[id]
	s.mu.Unlock()
	if !ok || role != "service_role" {
		writeError(w, 404, "NoSuchBucket", "Bucket not found")
		return
	}
	writeJSON(w, map[string]any{"id": b.ID, "name": b.ID, "public": b.Public, "file_size_limit": b.FileSizeLimit,
		"allowed_mime_types": b.AllowedMimeTypes, "owner": "", "created_at": time.Now().UTC(), "updated_at": time.Now().UTC()})
}
