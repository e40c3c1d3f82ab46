package accountpool_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// newService builds (and at the end shuts down) a service on cfg, with its
// log in the returned buffer.
func newService(t *testing.T, cfg accountpool.Config) (*syncbuf.Buffer, error) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	cfg.Addr, cfg.Keyring, cfg.InsecureNoAuth = "127.0.0.1:0", keyring, true
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	svc, err := accountpool.New(context.Background(), cfg)
	if err != nil {
		return logs, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, svc.Serve(ctx))
	return logs, nil
}

func TestStateChoice(t *testing.T) {
	t.Run("PostgreSQLWithInMemoryStateWarns", func(t *testing.T) {
		// The pool connects lazily: no database is needed to build it.
		logs, err := newService(t, accountpool.Config{DatabaseURL: "postgres://switchyard_app@127.0.0.1:1/none"})
		require.NoError(t, err)
		require.Contains(t, logs.String(), "it must be the only AccountPool replica")
	})
	t.Run("TheEmbeddedStoreDoesNotWarnAboutReplicas", func(t *testing.T) {
		logs, err := newService(t, accountpool.Config{})
		require.NoError(t, err)
		require.NotContains(t, logs.String(), "only AccountPool replica")
	})
	t.Run("ARedisURLChoosesRedis", func(t *testing.T) {
		logs, err := newService(t, accountpool.Config{RedisURL: "redis://127.0.0.1:1/3", RedisNamespace: "ns-a", RedisFailure: accountpool.FailDegrade})
		require.NoError(t, err)
		require.Contains(t, logs.String(), "keeps its live state in Redis")
		require.Contains(t, logs.String(), "redis_addr=127.0.0.1:1 redis_db=3 namespace=ns-a redis_failure=degrade")
	})
	for name, tc := range map[string]struct {
		cfg  accountpool.Config
		want string
	}{
		"RedisWithoutAURL":    {accountpool.Config{State: accountpool.StateRedis}, "needs a Redis URL"},
		"AnUnknownState":      {accountpool.Config{State: "disk"}, `unknown state "disk"`},
		"ABadURLIsNotEchoed":  {accountpool.Config{RedisURL: "http://:hunter2@host"}, "not a valid redis:// or rediss:// URL"},
		"AnUnknownPolicy":     {accountpool.Config{RedisURL: "redis://127.0.0.1:1", RedisFailure: "pray"}, `unknown Redis failure policy "pray"`},
		"MemoryIgnoresTheURL": {accountpool.Config{State: accountpool.StateMemory, RedisURL: "redis://127.0.0.1:1"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			logs, err := newService(t, tc.cfg)
			if tc.want == "" {
				require.NoError(t, err)
				require.NotContains(t, logs.String(), "Redis")
				return
			}
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}
