package queue

import (
	"context"
	"log/slog"
)

type logAttrsKey struct{}

// withJobAttrs marks a run's context with its job's id and attempt, for
// JobLogs.
func withJobAttrs(ctx context.Context, job Job) context.Context {
	return context.WithValue(ctx, logAttrsKey{}, []slog.Attr{slog.String("job_id", string(job.ID)), slog.Int("attempt", job.Attempt)})
}

// JobLogs wraps a handler so that every record logged with a job's run
// context (the *Context logging calls a handler makes with the ctx it was
// given) carries job_id and attempt, wherever in the code it is logged.
func JobLogs(h slog.Handler) slog.Handler { return jobLogs{h} }

type jobLogs struct{ slog.Handler }

func (j jobLogs) Handle(ctx context.Context, r slog.Record) error {
	if attrs, ok := ctx.Value(logAttrsKey{}).([]slog.Attr); ok {
		r.AddAttrs(attrs...)
	}
	return j.Handler.Handle(ctx, r)
}

func (j jobLogs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return jobLogs{j.Handler.WithAttrs(attrs)}
}

func (j jobLogs) WithGroup(name string) slog.Handler { return jobLogs{j.Handler.WithGroup(name)} }
