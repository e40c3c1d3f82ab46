package tracker

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// watchCursor is the decoded form of a watch cursor: a position in an
// organization's change feed (store.Change.Seq) and a fingerprint of the
// organization it was issued for. Like a page token it is not signed: a
// forged cursor can only move a caller within its own organization's
// feed.
type watchCursor struct {
	Version int    `json:"v"`
	Seq     int64  `json:"s"`
	Org     string `json:"o"`
}

const watchCursorVersion = 1

// maxWatchCursorBytes rejects garbage before decoding it.
const maxWatchCursorBytes = 256

func encodeWatchCursor(org string, seq int64) string {
	b, err := json.Marshal(watchCursor{Version: watchCursorVersion, Seq: seq, Org: orgFingerprint(org)})
	if err != nil {
		// A struct of ints and strings always encodes.
		panic(fmt.Sprintf("encoding watch cursor: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeWatchCursor(s, org string) (int64, error) {
	bad := invalid("cursor", "is not a cursor this service issued; pass the cursor of the last message you processed unchanged, or omit it to start from the backlog")
	if len(s) > maxWatchCursorBytes {
		return 0, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, bad
	}
	var c watchCursor
	if err := json.Unmarshal(b, &c); err != nil || c.Version != watchCursorVersion || c.Seq < 0 {
		return 0, bad
	}
	if c.Org != orgFingerprint(org) {
		return 0, invalid("cursor", "was issued for a different organization_id; resume with a cursor from this organization's watch, or omit it to start from the backlog")
	}
	return c.Seq, nil
}

// orgFingerprint identifies an organization in a cursor without naming
// it: the page tokens' fingerprint, for the organization unfiltered.
func orgFingerprint(org string) string { return fingerprint(org, store.ListFilter{}) }
