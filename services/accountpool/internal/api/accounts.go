package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Bounds on the accounts one message carries (issue 15). The gRPC limit
// is 4 MiB; an account with the most labels the API takes (64, each of up
// to 63 + 256 bytes) is about 21 KiB, one without labels about 300 bytes.
const (
	// maxAccountsBytes cuts a ListAccounts page or a WatchAccounts message
	// short once its accounts reach this many bytes: half the gRPC limit.
	maxAccountsBytes = 2 << 20
	// maxWatchAccounts is the most accounts one WatchAccounts message
	// carries; omitted_accounts counts the others.
	maxWatchAccounts = 500
)

// accountPages are ListAccounts' page tokens: GetUsage's format
// (validate.go), the cursor being an account's create time and id.
var accountPages = pageKind{"ListAccounts", "the oldest account", "organization_id"}

// accountsFingerprint ties a ListAccounts token to its organization.
func accountsFingerprint(org string) string {
	h := sha256.Sum256(fmt.Appendf(nil, "accounts|%q", org))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// listAccounts is ListAccounts: one page of at most page_size accounts,
// cut shorter by maxAccountsBytes.
func (s *Server) listAccounts(ctx context.Context, req *accountpoolv1.ListAccountsRequest) (*accountpoolv1.ListAccountsResponse, error) {
	org := req.GetOrganizationId()
	if err := checkOrg(org); err != nil {
		return nil, err
	}
	q := pool.AccountQuery{PageSize: defaultPageSize}
	switch n := req.GetPageSize(); {
	case n < 0:
		return nil, invalid("page_size", "must not be negative; omit it for %d accounts", defaultPageSize)
	case n > 0:
		q.PageSize = min(int(n), maxPageSize)
	}
	fp := accountsFingerprint(org)
	c, err := decodeCursorToken(req.GetPageToken(), fp, accountPages)
	if err != nil {
		return nil, err
	}
	if c != nil {
		q.After = &pool.AccountCursor{CreateTime: c.CreateTime, ID: c.ID}
	}
	page, err := s.pool.AccountsPage(ctx, org, q)
	if err != nil {
		return nil, err
	}
	accounts := accountsToProto(page.Accounts)
	n := fitAccounts(accounts, maxAccountsBytes)
	next := page.Next
	if n < len(accounts) {
		last := page.Accounts[n-1].Account
		next = &pool.AccountCursor{CreateTime: last.CreateTime, ID: last.ID}
	}
	out := &accountpoolv1.ListAccountsResponse{Accounts: accounts[:n]}
	if next != nil {
		out.NextPageToken = encodePageToken(&store.UsageCursor{CreateTime: next.CreateTime, ID: next.ID}, fp)
	}
	return out, nil
}

// fitAccounts returns how many of accounts, from the first, fit in budget
// bytes: at least one, so a page always makes progress.
func fitAccounts(accounts []*accountpoolv1.Account, budget int) int {
	used := 0
	for i, a := range accounts {
		used += proto.Size(a)
		if used > budget && i > 0 {
			return i
		}
	}
	return len(accounts)
}
