package api

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
)

// WatchAccounts implements AccountPoolServiceServer. It sends the
// organization's accounts in name order, at most maxWatchAccounts of them
// and maxAccountsBytes of accounts per message (omitted_accounts counts
// the rest), so no message nears the gRPC limit, then again each
// time the list differs from the last one sent, never sooner than
// min_interval after the previous message: changes within the interval
// are coalesced into the next one.
//
// It reads the list again when the pool reports a change in this process
// (pool.Changes) and, whatever it reports, every min_interval: capacity
// refills and cool-downs and breakers run out with time, and replicas
// sharing the live state (Redis) change it without telling this one. A
// read costs a state read of the accounts sent, so a watcher of an idle
// organization costs one read per min_interval and sends nothing.
//
// The stream runs until the client leaves or the server shuts down
// (grpcserver.Config.Watches turns that into Unavailable). A failure to
// read the accounts ends it with the error's code, Unavailable for an
// outage of the store or the live state: the client reconnects with
// backoff rather than watch a list that silently stopped being live.
func (s *Server) WatchAccounts(req *accountpoolv1.WatchAccountsRequest, stream grpc.ServerStreamingServer[accountpoolv1.WatchAccountsResponse]) error {
	ctx := stream.Context()
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return s.fail(ctx, "WatchAccounts", err)
	}
	every, err := watchInterval(req.GetMinInterval())
	if err != nil {
		return s.fail(ctx, "WatchAccounts", err)
	}
	// Subscribed before the first read, so no change after it is missed.
	changed, stop := s.pool.Changes(req.GetOrganizationId())
	defer stop()
	return s.watchAccounts(ctx, req.GetOrganizationId(), every, changed, stream.Send)
}

// watchAccounts is WatchAccounts's loop, on the handler's goroutine; all
// its state is local. The time of the previous message is taken after its
// Send returned, and the next read starts no sooner than every after it,
// so both the messages' observe times and their sends are at least every
// apart.
func (s *Server) watchAccounts(ctx context.Context, org string, every time.Duration, changed <-chan struct{},
	send func(*accountpoolv1.WatchAccountsResponse) error) error {
	timer := time.NewTimer(every)
	defer timer.Stop()
	var (
		last        []*accountpoolv1.Account
		lastOmitted int32
		sent        time.Time // zero until the first message
	)
	for {
		// What woke the loop is in the read below; a change after this
		// wakes it again.
		select {
		case <-changed:
		default:
		}
		infos, total, observed, err := s.pool.ObserveAccounts(ctx, org, maxWatchAccounts)
		if err != nil {
			if ctx.Err() != nil {
				// The client left or the server shuts down mid-read: no
				// outage to log, whatever the read made of it.
				err = ctx.Err()
			}
			return s.fail(ctx, "WatchAccounts", err)
		}
		accounts := accountsToProto(infos)
		accounts = accounts[:fitAccounts(accounts, maxAccountsBytes)]
		omitted := int32(total - len(accounts))
		if sent.IsZero() || omitted != lastOmitted || !slices.EqualFunc(accounts, last, equalAccount) {
			if err := send(&accountpoolv1.WatchAccountsResponse{Accounts: accounts, ObserveTime: timestamppb.New(observed), OmittedAccounts: omitted}); err != nil {
				return err
			}
			last, lastOmitted, sent = accounts, omitted, time.Now()
		}

		timer.Reset(every)
		select {
		case <-ctx.Done():
			return s.fail(ctx, "WatchAccounts", ctx.Err())
		case <-changed:
		case <-timer.C:
		}
		if wait := every - time.Since(sent); wait > 0 {
			// Too soon after the previous message: what changes until
			// then goes into the next one.
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return s.fail(ctx, "WatchAccounts", ctx.Err())
			case <-timer.C:
			}
		}
	}
}

func equalAccount(a, b *accountpoolv1.Account) bool { return proto.Equal(a, b) }
