package api_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/postgres"
)

const testSecret = "a-test-projects-jwt-secret-of-at-least-32-characters"

// token is a Supabase user access token signed with key (HS256 with a secret,
// RS256 with an RSA key).
func token(t *testing.T, key any, sub, aud string, ttl time.Duration) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "aud": aud, "role": "authenticated", "exp": time.Now().Add(ttl).Unix()}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	if k, ok := key.(*rsa.PrivateKey); ok {
		tok = jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["kid"] = "test-key"
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withLocalAuth rebuilds e's API with a local verifier.
func withLocalAuth(t *testing.T, e *env, secret, jwksURL string, require bool) {
	t.Helper()
	v, err := auth.NewLocal(secret, jwksURL)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, e.fake), SOPs: postgres.NewSOPLocker(e.direct),
		Auth: v, RequireAuth: require, Logger: slog.New(slog.DiscardHandler), ServiceRoleKey: testServiceKey})
}

// testServiceKey is the project's service-role key in the new format (not a
// JWT), as SUPABASE_SERVICE_ROLE_KEY holds it.
const testServiceKey = "sb_secret_a-test-projects-service-role-key"

// A priority in POST /api/queue-job is the service role's alone — its key
// as configured, or a JWT the project signed with the role service_role — and
// a whole number from -100 to 100; a user or an anonymous caller that sends
// one gets 403 with a sentence, and nothing is queued.
func TestOnlyTheServiceRoleSetsAPriority(t *testing.T) {
	t.Parallel()
	e, alice, _, id := aliceUploads(t)
	e.upload(id, 1000, "video/mp4")
	withPriority := func(p string) string { return `{"jobId":"` + id + `","priority":` + p + `}` }
	refused := map[string]any{"error": "Only the service role may set a job's priority: send the project's service-role key as Authorization: Bearer <key>, or leave priority out"}
	e.do("POST", "/api/queue-job", withPriority("-50"), alice...).expect(t, 403, refused)
	e.do("POST", "/api/queue-job", withPriority("-50")).expect(t, 403, refused)
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "uploaded"})

	signed := func(secret string) []string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "supabase", "role": "service_role", "iat": time.Now().Unix()})
		s, err := tok.SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return []string{"Authorization", "Bearer " + s}
	}
	service := []string{"Authorization", "Bearer " + testServiceKey}
	e.do("POST", "/api/queue-job", withPriority("-50"), signed("another project's secret, 32 characters or more")...).expect(t, 401, nil)
	e.do("POST", "/api/queue-job", withPriority("-50"), "Authorization", "Bearer "+testServiceKey+"x").expect(t, 401, nil)
	bad := map[string]any{"error": "priority must be a whole number from -100 (sooner) to 100 (later)"}
	for _, p := range []string{`"high"`, `"5"`, `2.5`, `101`, `-101`, `1e3`, `[1]`, `true`, `1e-400`, `99.99999999999999999`, `1e400`} {
		e.do("POST", "/api/queue-job", withPriority(p), service...).expect(t, 400, bad)
	}
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "uploaded"})

	// The service role queues alice's upload, rushed; it stays alice's.
	e.do("POST", "/api/queue-job", withPriority("-50"), signed(testSecret)...).expect(t, 200, map[string]any{"status": "queued"})
	job, err := e.store.Get(t.Context(), jobs.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := job.Priority(); p != -50 || !ok || job.Owner() != "alice" {
		t.Fatalf("priority %d (%v), owner %q; want -50 and alice", p, ok, job.Owner())
	}
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "queued"})

	// Without a priority, the service role queues as anyone would; 5.0 is 5.
	r := e.do("POST", "/api/get-upload-url", "", alice...)
	other, _ := r.body["jobId"].(string)
	e.upload(other, 1000, "video/mp4")
	e.do("POST", "/api/queue-job", `{"jobId":"`+other+`","priority":5.0}`, service...).expect(t, 200, map[string]any{"status": "queued"})
	if job, err = e.store.Get(t.Context(), jobs.ID(other)); err != nil {
		t.Fatal(err)
	}
	if p, ok := job.Priority(); p != 5 || !ok {
		t.Fatalf("priority %d (%v); want 5", p, ok)
	}
}

// A job is its owner's from get-upload-url on: nobody else — signed in or
// not — can queue it or see its status or SOP; anonymous jobs stay open;
// tokens are checked locally (signature, expiry, audience).
func TestOwnersFromTheUploadURLOn(t *testing.T) {
	t.Parallel()
	e, alice, bob, id := aliceUploads(t)
	e.upload(id, 1000, "video/mp4")
	// Before it is queued: only alice sees the upload, only alice may queue it.
	e.do("GET", "/api/job-status/"+id, "", bob...).expect(t, 404, map[string]any{"error": "Job not found"})
	e.do("GET", "/api/job-status/"+id, "").expect(t, 404, nil)
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "uploaded"})
	e.do("POST", "/api/queue-job", queue(id), bob...).expect(t, 404, nil)
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 404, nil)
	e.do("POST", "/api/queue-job", queue(id), alice...).expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/job-status/"+id, "", bob...).expect(t, 404, nil)
	e.do("GET", "/api/job-status/"+id, "").expect(t, 404, nil)
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/sop/"+id, "", bob...).expect(t, 404, map[string]any{"error": "SOP not found"})

	// Anonymous jobs stay open to everyone, as the unchanged app needs,
	// also when a signed-in user queues one: the owner is who asked for
	// the upload URL, and storage's policy reads it so too. Before, bob
	// queueing it made it his, and hid it from its uploader.
	r := e.do("POST", "/api/get-upload-url", "")
	r.expect(t, 200, nil)
	open, _ := r.body["jobId"].(string)
	e.upload(open, 1000, "video/mp4")
	e.do("POST", "/api/queue-job", queue(open), bob...).expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/job-status/"+open, "").expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/job-status/"+open, "", alice...).expect(t, 200, map[string]any{"status": "queued"})
	if j, _ := e.store.Get(context.Background(), jobs.ID(open)); j.Owner() != "" {
		t.Fatalf("the anonymous upload queued by bob is owned by %q", j.Owner())
	}

	// Bad tokens are refused, never taken as anonymous.
	for name, tok := range map[string]string{
		"expired":        token(t, []byte(testSecret), "alice", "authenticated", -time.Minute),
		"wrong audience": token(t, []byte(testSecret), "alice", "anon", time.Hour),
		"wrong key":      token(t, []byte("another-secret-another-secret-another-secret"), "alice", "authenticated", time.Hour),
		"no subject":     token(t, []byte(testSecret), "", "authenticated", time.Hour),
		"garbage":        "not.a.token",
	} {
		r := e.do("GET", "/api/job-status/"+open, "", "Authorization", "Bearer "+tok)
		if r.status != http.StatusUnauthorized || r.body["error"] == nil {
			t.Errorf("%s token: %d %s", name, r.status, r.raw)
		}
	}
}

// A job has one owner, its upload's, which storage's policy reads too,
// whatever a person does in the dashboard: metadata replaced without its
// owner, an owner written there by hand, metadata that is no object, a row
// inserted by hand with an owner, an owner changed in runops_uploads. Before,
// the API read the owner from metadata alone: the first opened alice's job
// to everyone through the API while storage still held it closed.
func TestOneOwnerWhateverTheDashboardDoes(t *testing.T) {
	t.Parallel()
	e, alice, bob, id := aliceUploads(t)
	e.upload(id, 1000, "video/mp4")
	e.do("POST", "/api/queue-job", queue(id), alice...).expect(t, 200, nil)
	owner := func(id string) (copy, upload any) {
		t.Helper()
		if err := e.direct.QueryRow(context.Background(), `SELECT j.metadata->'owner', to_jsonb(u.owner)
			FROM jobs j LEFT JOIN runops_uploads u USING (job_id) WHERE j.job_id = $1`, id).Scan(&copy, &upload); err != nil {
			t.Fatal(err)
		}
		return copy, upload
	}
	only := func(what, id string, who []string, others ...[]string) {
		t.Helper()
		if r := e.do("GET", "/api/job-status/"+id, "", who...); r.status != 200 {
			t.Errorf("%s: its owner gets %d %s", what, r.status, r.raw)
		}
		for _, o := range append(others, nil) {
			if r := e.do("GET", "/api/job-status/"+id, "", o...); r.status != 404 {
				t.Errorf("%s: another caller (%v) gets %d %s", what, o, r.status, r.raw)
			}
		}
	}
	for _, edit := range []string{`'{"priority": 1}'`, `metadata || '{"owner": "bob"}'`, `metadata - 'owner'`, `'[1, 2]'`, `NULL`} {
		e.exec(`UPDATE jobs SET metadata = `+edit+` WHERE job_id = $1`, id)
		only("metadata = "+edit, id, alice, bob)
		if copy, _ := owner(id); copy != nil && copy != "alice" {
			t.Errorf("metadata = %s: metadata.owner %v", edit, copy)
		}
	}
	e.exec(`UPDATE jobs SET metadata = '{}' WHERE job_id = $1`, id)
	if copy, _ := owner(id); copy != "alice" {
		t.Errorf("metadata.owner %v after metadata became an object again; want alice", copy)
	}
	// The upload's owner changed by hand: the row follows, and the API.
	e.exec(`UPDATE runops_uploads SET owner = 'bob' WHERE job_id = $1`, id)
	if copy, upload := owner(id); copy != "bob" || upload != "bob" {
		t.Errorf("after the upload's owner changed: metadata.owner %v, upload's %v", copy, upload)
	}
	only("the upload's owner changed", id, bob, alice)
	// A row inserted by hand with an owner: storage reads it as its upload's.
	carol := uuid.NewString()
	e.exec(`INSERT INTO jobs (job_id, metadata) VALUES ($1, '{"owner": "carol"}')`, carol)
	if copy, upload := owner(carol); copy != "carol" || upload != "carol" {
		t.Errorf("a row inserted by hand: metadata.owner %v, upload's %v; want carol for both", copy, upload)
	}
	only("a row inserted by hand", carol, bearer(t, "carol"), alice, bob)
}

// A person clears an owned job's metadata (NULL) and re-queues it, in one
// edit or two (as `runops jobs requeue` does): jobs_requeued turns the NULL
// into {"attempt": 0}, an object, which gets the owner too. Before, the
// owner's trigger ran before jobs_requeued, and the API opened alice's job
// to everyone while storage still held it closed.
func TestARequeueOfNullMetadataKeepsTheOwner(t *testing.T) {
	t.Parallel()
	for name, edits := range map[string][]string{
		"one edit":  {`UPDATE jobs SET status = 'queued', metadata = NULL WHERE job_id = $1`},
		"two edits": {`UPDATE jobs SET metadata = NULL WHERE job_id = $1`, `UPDATE jobs SET status = 'queued' WHERE job_id = $1`},
	} {
		t.Run(name, func(t *testing.T) {
			e, alice, bob, id := aliceUploads(t)
			e.upload(id, 1000, "video/mp4")
			e.do("POST", "/api/queue-job", queue(id), alice...).expect(t, 200, nil)
			e.exec(`UPDATE jobs SET status = 'error', error = 'x' WHERE job_id = $1`, id)
			for _, sql := range edits {
				e.exec(sql, id)
			}
			var meta, upload any
			if err := e.direct.QueryRow(context.Background(), `SELECT j.metadata, u.owner FROM jobs j
				JOIN runops_uploads u USING (job_id) WHERE j.job_id = $1`, id).Scan(&meta, &upload); err != nil {
				t.Fatal(err)
			}
			if m, _ := meta.(map[string]any); m["owner"] != "alice" || upload != "alice" {
				t.Errorf("metadata %v, upload's owner %v; want alice for both", meta, upload)
			}
			if r := e.do("GET", "/api/job-status/"+id, "", alice...); r.status != 200 {
				t.Errorf("alice reads her job: %d %s", r.status, r.raw)
			}
			if r := e.do("GET", "/api/job-status/"+id, "", bob...); r.status != 404 {
				t.Errorf("bob reads alice's job: %d %s", r.status, r.raw)
			}
			if r := e.do("GET", "/api/job-status/"+id, ""); r.status != 404 {
				t.Errorf("an anonymous caller reads alice's job: %d %s", r.status, r.raw)
			}
		})
	}
}

// An owner blanked by hand in runops_uploads (an empty string rather than
// NULL: what a cleared text cell holds) is no owner, for storage as for the API. Before,
// "" was copied to metadata.owner, which the API read as no owner: the job
// opened to everyone through the API, while storage's policy (owner IS
// NULL, or = auth.uid()) held it closed to all.
func TestABlankUploadOwnerIsNone(t *testing.T) {
	t.Parallel()
	e, alice, bob, id := aliceUploads(t)
	e.upload(id, 1000, "video/mp4")
	e.do("POST", "/api/queue-job", queue(id), alice...).expect(t, 200, nil)
	e.exec(`UPDATE runops_uploads SET owner = '' WHERE job_id = $1`, id)
	var copy any
	var ownerIsNull bool
	if err := e.direct.QueryRow(context.Background(), `SELECT j.metadata->'owner', u.owner IS NULL FROM jobs j
		JOIN runops_uploads u USING (job_id) WHERE j.job_id = $1`, id).Scan(&copy, &ownerIsNull); err != nil {
		t.Fatal(err)
	}
	if copy != nil || !ownerIsNull {
		t.Errorf("metadata.owner %#v, the upload's owner NULL: %v; want both none", copy, ownerIsNull)
	}
	if r := e.do("GET", "/api/job-status/"+id, "", bob...); r.status != 200 {
		t.Errorf("bob reads the unowned job: %d %s", r.status, r.raw)
	}
}

// RUNOPS_REQUIRE_AUTH makes a token mandatory; a JWKS (asymmetric keys)
// verifies tokens as well as the secret does.
func TestRequiredTokensAgainstAJWKS(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "test-key", "alg": "RS256", "use": "sig",
			"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())}}})
	}))
	t.Cleanup(jwks.Close)
	e := setup(t)
	withLocalAuth(t, e, "", jwks.URL, true)
	e.do("POST", "/api/get-upload-url", "").expect(t, 401, nil)
	carol := []string{"Authorization", "Bearer " + token(t, key, "carol", "authenticated", time.Hour)}
	r := e.do("POST", "/api/get-upload-url", "", carol...)
	r.expect(t, 200, nil)
	id, _ := r.body["jobId"].(string)
	// No row yet: the owner is the one the upload was issued to.
	sum, err := e.store.Summary(context.Background(), jobs.ID(id))
	if err != nil || sum.Found || sum.Owner != "carol" {
		t.Fatalf("upload owner %q (a row: %v) %v", sum.Owner, sum.Found, err)
	}
	// An HS256 token is refused when no secret is configured.
	hs := token(t, []byte(testSecret), "carol", "authenticated", time.Hour)
	e.do("POST", "/api/get-upload-url", "", "Authorization", "Bearer "+hs).expect(t, 401, nil)
}

// Deleting an owned job's row (in the dashboard) leaves its SOP its owner's:
// the upload still names the owner, and GET, the Markdown export, the
// screenshots and PATCH keep answering 404 to everybody else.
func TestDeletedRowKeepsTheOwner(t *testing.T) {
	t.Parallel()
	e, alice, bob, id := aliceUploads(t)
	e.withSOPOf(id, "completed")
	e.exec(`DELETE FROM jobs WHERE job_id = $1`, id)
	e.fake.Put("videos/frames/"+id+"/open.jpg", []byte("\xff\xd8\xff\xe0jpeg"), "image/jpeg")
	for _, who := range [][]string{bob, nil} {
		e.do("GET", "/api/sop/"+id, "", who...).expect(t, 404, map[string]any{"error": "SOP not found"})
		e.do("GET", "/api/sop/"+id+"?format=md", "", who...).expect(t, 404, nil)
		e.do("GET", "/api/sop/"+id+"/frames/open", "", who...).expect(t, 404, nil)
		e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"mine now"}}`, who...).expect(t, 404, nil)
	}
	e.do("GET", "/api/sop/"+id, "", alice...).expect(t, 200, nil)
}

// bearer is the Authorization header of a valid token of user.
func bearer(t *testing.T, user string) []string {
	return []string{"Authorization", "Bearer " + token(t, []byte(testSecret), user, "authenticated", time.Hour)}
}

// aliceUploads is an API with local token checks in which alice has asked
// for an upload URL: her and bob's headers, and the job id.
func aliceUploads(t *testing.T) (e *env, alice, bob []string, id string) {
	e = setup(t)
	withLocalAuth(t, e, testSecret, "", false)
	alice, bob = bearer(t, "alice"), bearer(t, "bob")
	r := e.do("POST", "/api/get-upload-url", "", alice...)
	r.expect(t, 200, nil)
	id, _ = r.body["jobId"].(string)
	return e, alice, bob, id
}
