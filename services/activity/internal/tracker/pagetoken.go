package tracker

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// pageToken is the decoded form of a page token: the list position of the
// last activity on the previous page, and a fingerprint of the
// organization and filters it was issued for. It is not signed: a forged
// token can only move a caller within its own organization's list.
type pageToken struct {
	Version   int    `json:"v"`
	StartTime int64  `json:"t"` // unix microseconds
	ID        string `json:"id"`
	Filter    string `json:"f"`
}

const pageTokenVersion = 1

func encodePageToken(c store.Cursor, fp string) string {
	b, err := json.Marshal(pageToken{Version: pageTokenVersion, StartTime: c.StartTime.UnixMicro(), ID: c.ID, Filter: fp})
	if err != nil {
		// A struct of ints and strings always encodes.
		panic(fmt.Sprintf("encoding page token: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(s, fp string) (store.Cursor, error) {
	bad := invalid("page_token", "is not a token this service issued; pass next_page_token from the previous response unchanged, or omit it for the first page")
	if len(s) > maxPageTokenBytes {
		return store.Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return store.Cursor{}, bad
	}
	var tok pageToken
	if err := json.Unmarshal(b, &tok); err != nil || tok.Version != pageTokenVersion {
		return store.Cursor{}, bad
	}
	id, err := parseActivityID(tok.ID)
	if err != nil {
		return store.Cursor{}, bad
	}
	if tok.Filter != fp {
		return store.Cursor{}, invalid("page_token", "was issued for a different organization_id, session_id, status or start time window; keep them unchanged while paging, or start again without a page_token")
	}
	return store.Cursor{StartTime: time.UnixMicro(tok.StartTime).UTC(), ID: id}, nil
}

// fingerprint identifies an organization and a filter, so that a token is
// only honoured for the query it was issued for.
func fingerprint(org string, f store.ListFilter) string {
	micro := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixMicro()
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%q|%q|%q|%d|%d", org, f.SessionID, f.Status, micro(f.StartFrom), micro(f.StartTo)))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}
