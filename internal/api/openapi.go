package api

import (
	_ "embed"
	"net/http"
	"strconv"
)

// OpenAPI is the OpenAPI 3.1 document of the whole /api surface and of the
// completion webhooks: the one source, kept beside the handlers it
// describes and held against them by the tests (internal/api/apitest).
// Read it; never change it.
//
//go:embed openapi.json
var OpenAPI []byte

// serveOpenAPI answers GET /openapi.json. It is a route of the API's own
// router, so every process that serves the API serves it, and it is never
// proxied to the frontend. It holds no secret, so it needs no token even
// where RUNOPS_REQUIRE_AUTH does, and any origin may read it (a mock or API
// browser served elsewhere).
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(OpenAPI)))
	// It changes only with the binary: a client may keep it, but asks again.
	h.Set("Cache-Control", "no-cache")
	h.Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(OpenAPI)
}
