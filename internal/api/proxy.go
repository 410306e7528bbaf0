package api

import (
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// newFrontendProxy forwards every non-API request to the Next.js server as it
// is: bodies streamed both ways, its status codes and bodies unchanged (its
// /sop/* page answers 500 by design), websocket upgrades tunnelled (next dev).
func newFrontendProxy(target *url.URL, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		FlushInterval: -1,
		// What it says of a body cut off on the way (a client that left, a
		// frontend that died) goes to the service's own log, not stderr.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("frontend unreachable", "path", r.URL.Path, "error", err)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("The Runops web app is not reachable right now.\n"))
		},
	}
}
