package servicekit_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/servicekit"
)

func TestChooseStore(t *testing.T) {
	for _, tc := range []struct {
		kind, url, want, problem string
	}{
		{"", "", servicekit.StoreMemory, ""},
		{"", "postgres://x", servicekit.StorePostgres, ""},
		{"memory", "postgres://x", servicekit.StoreMemory, ""},
		{"postgres", "postgres://x", servicekit.StorePostgres, ""},
		{"postgres", "", "", "needs a database URL: set SWITCHYARD_DATABASE_URL"},
		{"disk", "", "", `unknown store "disk"`},
	} {
		got, err := servicekit.ChooseStore(tc.kind, tc.url)
		if tc.problem != "" {
			require.ErrorContains(t, err, tc.problem)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%q %q", tc.kind, tc.url)
	}
}

// Without a gate the service serves at once and starts its after-ready
// work; at shutdown every background function ends before Close runs.
func TestServeShutsDownInOrder(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "test", Logger: logger}, func(grpc.ServiceRegistrar) {})
	require.NoError(t, err)
	var running atomic.Int32
	started := make(chan struct{}, 2)
	work := func(ctx context.Context) {
		running.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		running.Add(-1)
	}
	closedWith := int32(-1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- servicekit.Serve(ctx, srv, servicekit.Lifecycle{
			Name: "test", Background: []func(context.Context){work}, AfterReady: []func(context.Context){work},
			Close: func() { closedWith = running.Load() }, Logger: logger,
		})
	}()
	<-started
	<-started
	cancel()
	require.NoError(t, <-done)
	require.Zero(t, closedWith, "the store closed after every background function ended")
}
