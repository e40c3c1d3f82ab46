package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
	"github.com/switchyard-dev/switchyard/web/dashboard"
)

const (
	envDashboardAddr     = "SWITCHYARD_DASHBOARD_ADDR"
	defaultDashboardAddr = "127.0.0.1:50090"
)

func runDashboard(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("dashboard", "Serves the live dashboard: a web page, and the HTTP API it reads, which forwards each request\nwith the caller's own token to AccountPool and Activity. It holds no token of its own.", stderr)
	var addr, poolAddr, activityAddr string
	var files tlsconfig.Files
	var insecurePlaintext bool
	var lf logFlags
	var tf telemetryFlags
	fs.StringVar(&addr, "addr", env(envDashboardAddr, defaultDashboardAddr), "dashboard HTTP listen address ("+envDashboardAddr+")")
	fs.StringVar(&poolAddr, "accountpool-addr", env(envAccountPoolAddr, defaultAccountPool), "AccountPool address ("+envAccountPoolAddr+")")
	fs.StringVar(&activityAddr, "activity-addr", env(envActivityAddr, defaultActivity), "Activity address ("+envActivityAddr+")")
	registerTLSFlags(fs, &files)
	registerInsecurePlaintext(fs, &insecurePlaintext)
	lf.register(fs)
	tf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "dashboard")
	var clientTLS *tls.Config
	if files.Enabled() {
		if clientTLS, err = tlsconfig.Client(files, ""); err != nil {
			return err
		}
	}
	tp, err := tf.start(ctx, logger, "switchyard-dashboard")
	if err != nil {
		return err
	}
	defer shutdownTelemetry(ctx, logger, tp)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the dashboard: %w", addr, err)
	}
	h, closeConns, err := newDashboard(dashboardTargets{pool: poolAddr, activity: activityAddr, tls: clientTLS, insecurePlaintext: insecurePlaintext}, tp.Service("switchyard-dashboard"), logger)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer closeConns()
	return serveHTTP(ctx, lis, h, "the dashboard", logger)
}

// dashboardTargets is where the dashboard reaches the services it reads.
type dashboardTargets struct {
	pool, activity    string
	tls               *tls.Config
	insecurePlaintext bool
}

// newDashboard dials the services and builds the dashboard's handler;
// closeConns closes the connections once it no longer serves.
func newDashboard(t dashboardTargets, tel telemetry.Providers, logger *slog.Logger) (h http.Handler, closeConns func(), err error) {
	for _, target := range []string{t.pool, t.activity} {
		if t.tls == nil && t.insecurePlaintext && grpcclient.PlaintextOffLoopback(target) {
			logger.Warn("the dashboard forwards bearer tokens WITHOUT TLS to a service other machines reach", "target", target)
		}
	}
	poolConn, err := grpcclient.Dial(grpcclient.Config{Target: t.pool, Telemetry: tel, TLS: t.tls, InsecurePlaintext: t.insecurePlaintext})
	if err != nil {
		return nil, nil, err
	}
	activityConn, err := grpcclient.Dial(grpcclient.Config{Target: t.activity, Telemetry: tel, TLS: t.tls, InsecurePlaintext: t.insecurePlaintext})
	if err != nil {
		_ = poolConn.Close()
		return nil, nil, err
	}
	closeConns = func() { _ = errors.Join(poolConn.Close(), activityConn.Close()) }
	d, err := dashboard.New(dashboard.Config{AccountPool: poolConn, Activity: activityConn, Logger: logger.With("service", "dashboard"), Telemetry: tel})
	if err != nil {
		closeConns()
		return nil, nil, err
	}
	return d, closeConns, nil
}

// serveHTTP serves h on lis until ctx is cancelled, then shuts down: the
// requests still running (the dashboard's watch streams among them) have
// their contexts cancelled at once and get five seconds to return.
func serveHTTP(ctx context.Context, lis net.Listener, h http.Handler, what string, logger *slog.Logger) error {
	base, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, BaseContext: func(net.Listener) context.Context { return base }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("serving "+what, "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", what, err)
	case <-ctx.Done():
	}
	cancelRequests()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stopping %s: %w", what, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
