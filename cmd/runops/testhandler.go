//go:build runops_testhandler

package main

import (
	"context"
	"os"

	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
)

// Built only into the binary the process-level tests run
// (go build -tags runops_testhandler): with RUNOPS_TEST_HANDLER=advisory every
// run is recorded by queuetest.Advisory, so overlapping runs show up. A job
// whose metadata has "test_hold": true holds its first attempt until cancelled.
func init() {
	if os.Getenv("RUNOPS_TEST_HANDLER") != "advisory" {
		return
	}
	pipelineHandler = func(_ context.Context, d handlerDeps) (queue.Handler, error) {
		return queuetest.Advisory(d.pool, func(ctx context.Context, j queue.Job) error {
			if hold, _ := j.Metadata["test_hold"].(bool); hold && j.Attempt == 1 {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}), nil
	}
}
