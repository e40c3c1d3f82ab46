package grpcclient_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
)

// The methods of the replicas: Idempotent is named in RetryUnavailable,
// Once is not (as SelectAccount is not).
const (
	methodIdempotent = "/test.v1.Replica/Idempotent"
	methodOnce       = "/test.v1.Replica/Once"
)

// replica is one server of a replicated test service: it answers with its
// name, and, once hang is set, takes its next call and never answers it,
// so that the test can stop the replica with that call in flight.
type replica struct {
	name    string
	addr    string
	srv     *grpc.Server
	served  atomic.Int32
	hang    atomic.Bool
	entered chan struct{} // receives when the hung call has arrived
	release chan struct{} // closed at cleanup, ending the hung handler
}

func (r *replica) handle(context.Context) (*wrapperspb.StringValue, error) {
	if r.hang.CompareAndSwap(true, false) {
		r.entered <- struct{}{}
		// Not the call's context: a handler that ended when the server
		// cancelled it could send its status before the connection closed.
		<-r.release
		return nil, status.Error(codes.Internal, "released at cleanup")
	}
	r.served.Add(1)
	return wrapperspb.String(r.name), nil
}

// kill stops the replica at once: its listener and connections close, and
// a call in flight gets no answer.
func (r *replica) kill() { r.srv.Stop() }

func startReplicas(t *testing.T, names ...string) ([]*replica, string) {
	t.Helper()
	handler := func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		if err := dec(&emptypb.Empty{}); err != nil {
			return nil, err
		}
		return srv.(*replica).handle(ctx)
	}
	desc := &grpc.ServiceDesc{
		ServiceName: "test.v1.Replica",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Idempotent", Handler: handler}, {MethodName: "Once", Handler: handler}},
	}
	var rs []*replica
	var addrs []string
	for _, name := range names {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		r := &replica{name: name, addr: lis.Addr().String(), srv: grpc.NewServer(),
			entered: make(chan struct{}, 1), release: make(chan struct{})}
		r.srv.RegisterService(desc, r)
		go func() { _ = r.srv.Serve(lis) }()
		t.Cleanup(func() { close(r.release); r.srv.Stop() })
		rs = append(rs, r)
		addrs = append(addrs, r.addr)
	}
	return rs, strings.Join(addrs, ", ")
}

func callReplica(ctx context.Context, conn *grpc.ClientConn, method string) (string, error) {
	out := &wrapperspb.StringValue{}
	if err := conn.Invoke(ctx, method, &emptypb.Empty{}, out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

func dialReplicas(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Target: target, RetryUnavailable: []string{methodIdempotent}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// untilEveryReplicaServed calls until each replica has answered once: the
// calls reach all of them as their connections become ready.
func untilEveryReplicaServed(ctx context.Context, t *testing.T, conn *grpc.ClientConn, rs []*replica) {
	t.Helper()
	for {
		all := true
		for _, r := range rs {
			all = all && r.served.Load() > 0
		}
		if all {
			return
		}
		_, err := callReplica(ctx, conn, methodIdempotent)
		require.NoError(t, err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAListIsBalancedRoundRobinOverEveryReplica(t *testing.T) {
	ctx := testCtx(t)
	rs, target := startReplicas(t, "a", "b", "c")
	conn := dialReplicas(t, target)
	untilEveryReplicaServed(ctx, t, conn, rs)

	// With every replica ready, round_robin takes them in turn.
	before := map[string]int32{}
	for _, r := range rs {
		before[r.name] = r.served.Load()
	}
	got := map[string]int{}
	for range 30 {
		name, err := callReplica(ctx, conn, methodOnce)
		require.NoError(t, err)
		got[name]++
	}
	require.Equal(t, map[string]int{"a": 10, "b": 10, "c": 10}, got)
	for _, r := range rs {
		require.EqualValues(t, before[r.name]+10, r.served.Load(), r.name)
	}
}

// A retryable call in flight on a replica that dies is retried on another
// replica and succeeds; later calls go to the replicas left.
func TestARetryableCallOnAReplicaThatDiesIsRetriedOnAnother(t *testing.T) {
	ctx := testCtx(t)
	rs, target := startReplicas(t, "a", "b", "c")
	conn := dialReplicas(t, target)
	untilEveryReplicaServed(ctx, t, conn, rs)

	b := rs[1]
	name, err := callUntilOneHangsOn(ctx, t, conn, b, methodIdempotent, func() { b.kill() })
	require.NoError(t, err, "the call that was on b when b died is retried elsewhere")
	require.Contains(t, []string{"a", "c"}, name)

	servedByB := b.served.Load()
	for range 30 {
		name, err := callReplica(ctx, conn, methodIdempotent)
		require.NoError(t, err, "calls keep succeeding with b down")
		require.Contains(t, []string{"a", "c"}, name)
	}
	require.Equal(t, servedByB, b.served.Load())
}

// A method not named in RetryUnavailable (SelectAccount is such a method)
// is not retried once its call has reached a replica: the caller gets the
// replica's death as UNAVAILABLE.
func TestACallNotMarkedRetryableFailsWithTheReplica(t *testing.T) {
	ctx := testCtx(t)
	rs, target := startReplicas(t, "a", "b")
	conn := dialReplicas(t, target)
	untilEveryReplicaServed(ctx, t, conn, rs)

	b := rs[1]
	_, err := callUntilOneHangsOn(ctx, t, conn, b, methodOnce, func() { b.kill() })
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

// callUntilOneHangsOn makes calls of method one at a time until one
// arrives at r (which then holds it), runs then, and returns that call's
// outcome.
func callUntilOneHangsOn(ctx context.Context, t *testing.T, conn *grpc.ClientConn, r *replica, method string, then func()) (string, error) {
	t.Helper()
	r.hang.Store(true)
	type result struct {
		name string
		err  error
	}
	for {
		res := make(chan result, 1)
		go func() {
			name, err := callReplica(ctx, conn, method)
			res <- result{name, err}
		}()
		select {
		case out := <-res:
			require.NoError(t, out.err, "a call before the one on %s", r.name)
			require.NotEqual(t, r.name, out.name)
		case <-r.entered:
			then()
			out := <-res
			return out.name, out.err
		}
	}
}

func TestADNSTargetIsBalancedToo(t *testing.T) {
	ctx := testCtx(t)
	rs, _ := startReplicas(t, "a")
	conn := dialReplicas(t, "dns:///"+rs[0].addr)
	name, err := callReplica(ctx, conn, methodOnce)
	require.NoError(t, err)
	require.Equal(t, "a", name)
}

func TestCheckTarget(t *testing.T) {
	for _, ok := range []string{
		"127.0.0.1:50052",
		"accountpool:50052",
		":50052",
		"[::1]:50052",
		"10.0.0.1:50052,10.0.0.2:50052",
		" a:1 , b:2 ,c:3",
		"dns:///accountpool.default.svc:50052",
		"dns://10.0.0.53/accountpool:50052",
		"passthrough:///whatever",
		"unix:///run/switchyard.sock",
	} {
		require.NoError(t, grpcclient.CheckTarget(ok), ok)
	}
	for bad, says := range map[string]string{
		"":                 "no address given",
		"  ":               "no address given",
		"a:1,,b:2":         "entry 2 of",
		"a:1,":             "entry 2 of",
		",a:1":             "entry 1 of",
		"a:1, ,b:2":        "is empty",
		"accountpool":      "missing port",
		"a:1,accountpool":  "entry 2: \"accountpool\" is not host:port: missing port",
		"a:1,b:":           "port \"\" is not a number",
		"a:http":           "port \"http\" is not a number",
		"a:0":              "from 1 to 65535",
		"a:65536":          "from 1 to 65535",
		"a:1,a:1":          "\"a:1\" is listed twice",
		"a:1,dns:///b:2":   "a list takes host:port entries only",
		"dns:///":          "names no host",
		"dns:///accountpl": "missing port",
		"a/b:1":            "not a name or an IP address",
		"::1:50052":        "too many colons",
		"http://a:1":       "is not host:port",
	} {
		err := grpcclient.CheckTarget(bad)
		require.Error(t, err, "%q", bad)
		require.Contains(t, err.Error(), says, "%q", bad)
	}
	_, err := grpcclient.Dial(grpcclient.Config{Target: "a:1,,b:2"})
	require.ErrorContains(t, err, "entry 2 of")
}

// ExampleCheckTarget shows the error a start-up check can name its
// setting in.
func ExampleCheckTarget() {
	fmt.Println(grpcclient.CheckTarget("10.0.0.1:50052,,10.0.0.2:50052"))
	// Output: entry 2 of "10.0.0.1:50052,,10.0.0.2:50052" is empty (a doubled, leading or trailing comma?)
}
