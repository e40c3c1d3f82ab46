package orchestrator

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits"
)

// settingsPool answers GetOrganizationSettings with limits, or err.
type settingsPool struct {
	accountpoolv1.AccountPoolServiceClient
	limits *accountpoolv1.TaskLimits
	err    error
	asked  []string
}

func (p *settingsPool) GetOrganizationSettings(_ context.Context, req *accountpoolv1.GetOrganizationSettingsRequest, _ ...grpc.CallOption) (*accountpoolv1.GetOrganizationSettingsResponse, error) {
	p.asked = append(p.asked, req.GetOrganizationId())
	if p.err != nil {
		return nil, p.err
	}
	return &accountpoolv1.GetOrganizationSettingsResponse{Settings: &accountpoolv1.OrganizationSettings{OrganizationId: req.GetOrganizationId(), TaskLimits: p.limits}}, nil
}

func TestSettingsFetchReadsTheTaskLimits(t *testing.T) {
	pool := &settingsPool{limits: &accountpoolv1.TaskLimits{MaxConcurrentTasks: 4, TasksPerSecond: 0.5}}
	got, err := settingsFetch(pool)(context.Background(), "acme")
	require.NoError(t, err)
	require.Equal(t, limits.Limits{MaxConcurrent: 4, PerSecond: 0.5}, got, "the burst is unset: the default")
	require.Equal(t, []string{"acme"}, pool.asked)

	pool.err = status.Error(codes.Unavailable, "down")
	_, err = settingsFetch(pool)(context.Background(), "acme")
	require.Error(t, err)
}

func TestLimiterDefaultsFromTheConfig(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := &settingsPool{err: status.Error(codes.Unavailable, "down")}
	l, err := newLimiter(Config{Logger: logger, OrgMaxConcurrentTasks: 1}, pool)
	require.NoError(t, err)
	release, err := l.Acquire(context.Background(), "acme")
	require.NoError(t, err, "a pool that is down does not fail the task")
	_, err = l.Acquire(context.Background(), "acme")
	var le *limits.Error
	require.ErrorAs(t, err, &le, "the configured default applies")
	require.Equal(t, 1, le.Limits.MaxConcurrent)
	require.Equal(t, float64(limits.DefaultPerSecond), le.Limits.PerSecond, "unset: the package default")
	release()

	_, err = newLimiter(Config{Logger: logger, OrgTasksPerSecond: -1}, pool)
	require.Error(t, err)
}
