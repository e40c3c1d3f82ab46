package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisLog routes go-redis's own messages (a connection pool that cannot
// dial, say) through the process's logger, so that they follow
// -log-format instead of breaking a JSON log with lines of Go's log
// package. go-redis keeps its logger in a package variable, so this is
// set once per process, by the commands that run an AccountPool.
type redisLog struct{ logger *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.logger.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func useRedisLog(logger *slog.Logger) {
	redis.SetLogger(redisLog{logger.With("component", "go-redis")})
}
