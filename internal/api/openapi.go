package api

import (
	_ "embed"
	"net/http"
	"strconv"
)

// OpenAPI is the OpenAPI 3.1 document of the whole /api surface and of the
// completion webhooks: the one source, kept beside the handlers it
// describes and held against them by the tests (internal/api/apitest).
//
//go:embed openapi.json
var OpenAPI []byte

// serveOpenAPI answers GET /openapi.json. It is a route of the API's own
// router, so every process that serves the API serves it, and it is never
// proxied to the frontend.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(OpenAPI)))
	// It changes only with the binary: clients may keep it, but ask again.
	h.Set("Cache-Control", "no-cache")
	h.Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(OpenAPI)
}
