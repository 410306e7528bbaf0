package api

import (
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// dropClientSaid removes what a client may say of itself that the
// frontend (Next.js, app code) takes for a proxy's word: its address
// (X-Real-IP and the like, read for rate limits), its port, prefix and
// original URL. Only a trusted proxy's pass.
func dropClientSaid(h http.Header) {
	for k := range h {
		switch {
		case strings.HasPrefix(k, "X-Forwarded-"), strings.HasPrefix(k, "X-Original-"),
			k == "X-Real-Ip", k == "True-Client-Ip", k == "X-Client-Ip", k == "Cf-Connecting-Ip", k == "Fastly-Client-Ip":
			delete(h, k)
		}
	}
}

// newFrontendProxy forwards every non-API request to the Next.js server as it
// is: bodies streamed both ways, its status codes and bodies unchanged (its
// /sop/* page answers 500 by design), websocket upgrades tunnelled (next dev).
// It says who the client is in X-Forwarded-For, -Host and -Proto; from a
// proxy it trusts (RUNOPS_TRUSTED_PROXIES), what that proxy said comes
// first: the frontend sees the browser's address and scheme (https behind
// a load balancer that ends TLS), not the proxy's. What anyone else says
// of itself is not passed on (dropClientSaid).
func newFrontendProxy(target *url.URL, trusted func(*http.Request) bool, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			trust := trusted(pr.In)
			if trust {
				// SetXForwarded appends the client to what the proxy said.
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			} else {
				dropClientSaid(pr.Out.Header)
			}
			pr.SetXForwarded()
			if trust {
				for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
					if v := pr.In.Header.Get(h); v != "" {
						pr.Out.Header.Set(h, v)
					}
				}
			}
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
