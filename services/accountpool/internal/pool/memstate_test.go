package pool

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// snapshot copies the live records of refs out of a State.
func snapshot(ctx context.Context, s State, refs ...Ref) ([]Live, error) {
	out := make([]Live, len(refs))
	for i, ref := range refs {
		err := s.Read(ctx, Refs{ref}, func(_ int, r Records) {
			out[i] = Live{Breaker: *r.Breaker, Cooldown: *r.Cooldown, Buckets: *r.Buckets}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func TestMemStateDropsZeroRecords(t *testing.T) {
	s := NewMemState()
	ref := Ref{OrgID: "org", AccountID: "acct", QuotaKey: "a:acct", Family: FamilySonnet}
	ctx := context.Background()
	require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
		l.Breaker.Failures, l.Cooldown.Reason, l.Buckets.Requests.Level = 1, CooldownRateLimited, 1
		return nil
	}))
	o := s.orgs["org"]
	require.Len(t, o.breakers, 1)
	require.Len(t, o.quotas, 1)
	require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
		*l = Live{}
		return nil
	}))
	require.Empty(t, o.breakers)
	require.Empty(t, o.quotas)
}

// The lease queue pops in due order whatever order it was pushed in, also
// when pops and pushes interleave and its front is reclaimed.
func TestLeaseQueueIsOrdered(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var q leaseQueue
		var model []int64
		for range rapid.IntRange(0, 500).Draw(t, "steps") {
			if len(model) > 0 && rapid.IntRange(0, 2).Draw(t, "pop") == 0 {
				d, ok := q.peek()
				require.True(t, ok)
				slices.Sort(model)
				require.Equal(t, model[0], d.due)
				q.pop()
				model = model[1:]
				continue
			}
			due := int64(rapid.IntRange(0, 1_000).Draw(t, "due"))
			q.push(leaseDue{due: due})
			model = append(model, due)
		}
		for range model {
			_, ok := q.peek()
			require.True(t, ok)
			q.pop()
		}
		_, ok := q.peek()
		require.False(t, ok)
	})
}
