// Package redistest connects tests to a Redis.
//
// Tests find the server through SWITCHYARD_TEST_REDIS_URL (a redis:// URL).
// Without it Redis tests skip, unless SWITCHYARD_REQUIRE_REDIS is set (CI
// sets it), in which case they fail: a Redis test never passes silently by
// not running. Tests share the server, so each keeps to key names of its
// own (Namespace).
package redistest

import (
	"context"
	"os"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// EnvURL and EnvRequire name the environment variables this package reads.
const (
	EnvURL     = "SWITCHYARD_TEST_REDIS_URL"
	EnvRequire = "SWITCHYARD_REQUIRE_REDIS"
)

// URL returns the test Redis URL, or skips (fails under
// SWITCHYARD_REQUIRE_REDIS) when none is configured.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s is set but %s is not: Redis tests must run", EnvRequire, EnvURL)
		}
		t.Skipf("%s is not set; skipping Redis test", EnvURL)
	}
	return u
}

// Client connects to the test Redis and closes the client when the test
// ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("%s is set but Redis does not answer: %v", EnvURL, err)
	}
	return c
}

// Namespace returns a key prefix of the test's own and deletes every key
// under it when the test ends.
func Namespace(t testing.TB, c *redis.Client) string {
	t.Helper()
	ns := "test-" + uuid.NewString()
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, ns+":*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return ns
}
