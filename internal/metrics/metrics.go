// Package metrics holds the service's Prometheus metrics, under the names
// docs/operations.md lists (dashboards and alerts rely on them), and serves
// them. The queue engine, the pipeline and the API record into them; the
// gauges read from the jobs table come from one query, cached, so a scrape
// never loads the database. It must not know how jobs run.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every runops metric and the Go runtime's.
var Registry = prometheus.NewRegistry()

// Buckets: pickup from a millisecond up; stages from a second to an hour.
var (
	pickupBuckets = prometheus.ExponentialBuckets(0.001, 2, 16) // 1 ms … 33 s
	stageBuckets  = []float64{0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600}
	httpBuckets   = prometheus.ExponentialBuckets(0.001, 4, 9) // 1 ms … 65 s
)

var (
	// JobsFinished counts runs by how they ended: completed, error, lost,
	// cancelled, handed_back.
	JobsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runops_jobs_finished_total",
		Help: "Runs of jobs, by how they ended."}, []string{"outcome"})
	// Pickup is the time from a job's becoming queued to its claim.
	Pickup = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "runops_pickup_seconds",
		Help: "Time from a job's commit as queued to its claim.", Buckets: pickupBuckets})
	// StageSeconds is how long each stage of a job took.
	StageSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "runops_stage_seconds",
		Help: "Duration of each stage of a job.", Buckets: stageBuckets}, []string{"stage"})
	// Retries counts transient failures tried again, by step (storage, gemini).
	Retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runops_retries_total",
		Help: "Transient failures tried again, by step."}, []string{"step"})
	// GeminiTokens counts the tokens Gemini reported, by kind (prompt, video, output).
	GeminiTokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runops_gemini_tokens_total",
		Help: "Tokens Gemini reported, by kind."}, []string{"kind"})
	// HTTPRequests counts API answers by route pattern and status code.
	HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runops_http_requests_total",
		Help: "HTTP requests answered, by route pattern and status code."}, []string{"route", "code"})
	// WebhookDeliveries counts webhook delivery tries by outcome
	// (delivered, failed, given_up).
	WebhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "runops_webhook_deliveries_total",
		Help: "Webhook delivery tries, by outcome."}, []string{"outcome"})
	// HTTPSeconds is how long API answers took, by route pattern.
	HTTPSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "runops_http_request_seconds",
		Help: "Time to answer an HTTP request, by route pattern.", Buckets: httpBuckets}, []string{"route"})
)

func init() {
	Registry.MustRegister(JobsFinished, Pickup, StageSeconds, Retries, GeminiTokens, HTTPRequests, HTTPSeconds, WebhookDeliveries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{"completed", "error", "lost", "cancelled", "handed_back"} {
		JobsFinished.WithLabelValues(o) // present at 0 from the start
	}
}

// QueueStats is what the queue's reads tell: rows by status, the age of the
// oldest queued job (0 when none is queued), and, in a worker, how many
// queued jobs a claim could take now (those its owner cap does not hold
// back; nil in a process that claims nothing, which does not know the cap).
type QueueStats struct {
	ByStatus     map[string]int
	OldestQueued time.Duration
	Claimable    *int
	// OldestClaimable, with Claimable, is how long the oldest of those has
	// waited.
	OldestClaimable time.Duration
}

// WatchQueue publishes runops_jobs{status} and runops_queue_oldest_seconds
// from read, called at most once per ttl however often Prometheus scrapes;
// while the last read failed, neither is shown. stop takes them away.
func WatchQueue(read func(context.Context) (QueueStats, error), ttl time.Duration) (stop func()) {
	c := &queueCollector{read: read, ttl: ttl}
	Registry.MustRegister(c)
	return func() { Registry.Unregister(c) }
}

var (
	jobsDesc      = prometheus.NewDesc("runops_jobs", "Rows of public.jobs, by status.", []string{"status"}, nil)
	oldestDesc    = prometheus.NewDesc("runops_queue_oldest_seconds", "Age of the oldest queued job.", nil, nil)
	claimableDesc = prometheus.NewDesc("runops_queue_claimable", "Queued jobs a claim could take now: those RUNOPS_OWNER_CONCURRENCY does not hold back.", nil, nil)
	claimableAge  = prometheus.NewDesc("runops_queue_oldest_claimable_seconds", "Age of the oldest queued job a claim could take now.", nil, nil)
)

type queueCollector struct {
	read func(context.Context) (QueueStats, error)
	ttl  time.Duration

	mu    sync.Mutex
	at    time.Time
	stats QueueStats
	ok    bool
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- oldestDesc
	ch <- claimableDesc
	ch <- claimableAge
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		stats, err := c.read(ctx)
		cancel()
		c.at = time.Now() // a failed read is not retried on every scrape either
		// A failed read shows nothing until one succeeds: the last numbers,
		// shown as current, would hold a scaler to a queue that has moved.
		c.stats, c.ok = stats, err == nil
	}
	if !c.ok {
		return
	}
	for _, s := range []string{"queued", "processing", "completed", "error"} {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(c.stats.ByStatus[s]), s)
	}
	for s, n := range c.stats.ByStatus {
		switch s {
		case "queued", "processing", "completed", "error":
		default: // a status a person typed in the dashboard
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), s)
		}
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, c.stats.OldestQueued.Seconds())
	if c.stats.Claimable != nil {
		ch <- prometheus.MustNewConstMetric(claimableDesc, prometheus.GaugeValue, float64(*c.stats.Claimable))
		ch <- prometheus.MustNewConstMetric(claimableAge, prometheus.GaugeValue, c.stats.OldestClaimable.Seconds())
	}
}

// Handler serves the metrics in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}
