package anthropicsim

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Limits are a tier's per-minute rate limits. A value of zero or less means
// unlimited.
type Limits struct {
	RequestsPerMinute     int64
	InputTokensPerMinute  int64
	OutputTokensPerMinute int64
}

// DefaultTiers returns a new copy of the built-in tier table: the seed's tier1 to
// tier4 and Anthropic's current start, build and scale.
func DefaultTiers() map[string]Limits {
	return map[string]Limits{
		"tier1": {50, 30_000, 8_000},
		"tier2": {1_000, 450_000, 90_000},
		"tier3": {2_000, 800_000, 160_000},
		"tier4": {4_000, 2_000_000, 400_000},
		"start": {1_000, 2_000_000, 400_000},
		"build": {5_000, 5_000_000, 1_000_000},
		"scale": {10_000, 10_000_000, 2_000_000},
	}
}

// Config configures a [Server]. The zero value is usable.
type Config struct {
	// Tiers maps tier names to limits. Default: DefaultTiers(). New copies it.
	Tiers map[string]Limits
	// DefaultTier is the tier of keys that neither SetKeyTier nor a
	// sk-ant-sim-<tier>- prefix assigns. Default "scale". It must name a tier.
	DefaultTier string
	// Now is the clock for token buckets and cache expiry. Default time.Now.
	Now func() time.Time
	// Logger receives debug lines per request and info lines for control
	// actions. Keys appear only as a short SHA-256 fingerprint, and the
	// control token never. Default: discard.
	Logger *slog.Logger
	// ControlToken is the bearer token the /sim/ control endpoints require
	// ("Authorization: Bearer <token>"). Empty: New generates one with
	// crypto/rand; read it with [Server.ControlToken]. A token given must
	// pass [CheckControlToken]. The Messages API does not use it.
	ControlToken string
	// MaxKeys bounds the API keys the server keeps state for (buckets,
	// stats, usage, prompt cache) and the keys POST /sim/faults may script a
	// fault for; see the package doc for which keys are evicted. Default
	// (zero or less): DefaultMaxKeys.
	MaxKeys int
}

// KeyStats counts what a key's requests to POST /v1/messages got.
type KeyStats struct {
	// Requests is every request that carried the key.
	Requests int64 `json:"requests"`
	// Succeeded is the 200 answers.
	Succeeded int64 `json:"succeeded"`
	// RateLimited is every 429 answer: scripted or for lack of capacity.
	RateLimited int64 `json:"rate_limited"`
	// CapacityRejected is the 429 answers caused by the token buckets.
	CapacityRejected int64 `json:"capacity_rejected"`
	// Faulted is the requests a scripted fault (SetFault or key prefix) applied
	// to, whatever it did: error, drop or delay.
	Faulted int64 `json:"faulted"`
	// StreamsBroken is the streams that started (HTTP 200) and did not end
	// with message_stop: a scripted mid-stream failure or a client that left.
	StreamsBroken int64 `json:"streams_broken"`
}

// KeyUsage is the token totals of every answer a key got that started
// (unstreamed 200s and streams, complete or broken), as reported to the
// client: what the client's usage records must add up to.
type KeyUsage struct {
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_tokens"`
}

// Server simulates the Anthropic Messages API. Create it with [New]; it is safe
// for concurrent use. It remembers up to Config.MaxKeys keys (buckets, stats,
// prompt cache), evicting the least recently used beyond that.
type Server struct {
	tiers        map[string]Limits
	defaultTier  string
	now          func() time.Time
	log          *slog.Logger
	controlToken string
	controlSum   [sha256.Size]byte // SHA-256 of controlToken, for the comparison
	maxKeys      int

	mu       sync.Mutex
	keys     map[string]*keyState   // by API key; at most maxKeys idle ones (keys.go)
	plain    *list.List             // of *keyState without fault or tier, most recent first
	scripted *list.List             // of *keyState with a fault or tier assignment
	tierOf   map[string]string      // SetKeyTier assignments
	faults   map[string]*faultState // by API key or AllKeys
}

var _ http.Handler = (*Server)(nil)

// keyState is everything the server remembers about one API key.
type keyState struct {
	key          string
	list         *list.List    // s.plain or s.scripted
	elem         *list.Element // st's place in list
	inflight     int           // requests using the state now; not evicted while > 0
	tier         string
	req, in, out bucket
	stats        KeyStats
	usage        KeyUsage
	cache        map[[sha256.Size]byte]time.Time // cached prefix → expiry
}

// New returns a Server for cfg. It panics if cfg.DefaultTier (or "scale" when
// empty) is not in the tier table, or if cfg.ControlToken is set and fails
// [CheckControlToken]: those are programming errors.
func New(cfg Config) *Server {
	s := &Server{
		tiers:        maps.Clone(cfg.Tiers),
		defaultTier:  cfg.DefaultTier,
		now:          cfg.Now,
		log:          cfg.Logger,
		controlToken: cfg.ControlToken,
		maxKeys:      cfg.MaxKeys,
		keys:         make(map[string]*keyState),
		plain:        list.New(),
		scripted:     list.New(),
		tierOf:       make(map[string]string),
		faults:       make(map[string]*faultState),
	}
	if s.controlToken == "" {
		s.controlToken = GenerateControlToken()
	} else if err := CheckControlToken(s.controlToken); err != nil {
		panic("anthropicsim: Config.ControlToken: " + err.Error())
	}
	s.controlSum = sha256.Sum256([]byte(s.controlToken))
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultMaxKeys
	}
	if s.tiers == nil {
		s.tiers = DefaultTiers()
	}
	if s.defaultTier == "" {
		s.defaultTier = "scale"
	}
	if _, ok := s.tiers[s.defaultTier]; !ok {
		panic("anthropicsim: default tier " + s.defaultTier + " is not in Config.Tiers")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// SetKeyTier assigns apiKey to a tier, overriding any sk-ant-sim-<tier>- prefix,
// and refills the key's buckets to that tier's limits. An empty tier removes the
// assignment; an unknown tier is logged and also removes it, so the key falls
// back to its prefix tier or the default tier.
func (s *Server) SetKeyTier(apiKey, tier string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tiers[tier]; ok {
		s.tierOf[apiKey] = tier
	} else {
		if tier != "" {
			s.log.Warn("anthropicsim: unknown tier, key uses its default tier", "key", fingerprint(apiKey), "tier", tier)
		}
		delete(s.tierOf, apiKey)
	}
	s.relist(apiKey)
	if st, ok := s.keys[apiKey]; ok {
		st.setTier(s.tierFor(apiKey), s.tiers, s.now())
	}
}

// Stats returns the counters for apiKey; zero for a key never seen.
func (s *Server) Stats(apiKey string) KeyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.keys[apiKey]; ok {
		return st.stats
	}
	return KeyStats{}
}

// Usage returns the token totals for apiKey; zero for a key never seen.
func (s *Server) Usage(apiKey string) KeyUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.keys[apiKey]; ok {
		return st.usage
	}
	return KeyUsage{}
}

// ControlToken is the bearer token the /sim/ control endpoints require: the
// one Config.ControlToken gave, or the one New generated. It is a secret:
// whoever has it can script every key's answers.
func (s *Server) ControlToken() string { return s.controlToken }

// ServeHTTP routes the Messages API, the /sim/ control surface (which needs
// the control token) and /healthz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := "req_sim_" + rand.Text()
	w.Header().Set("request-id", reqID)
	if strings.HasPrefix(r.URL.Path, "/sim/") && !s.authorizeControl(w, r, reqID) {
		return
	}
	switch r.URL.Path {
	case "/v1/messages":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, reqID, http.MethodPost)
			return
		}
		s.handleMessages(w, r, reqID)
	case "/sim/faults":
		switch r.Method {
		case http.MethodPost:
			s.handleSetFault(w, r, reqID)
		case http.MethodDelete:
			s.handleClearFaults(w, r)
		default:
			methodNotAllowed(w, reqID, http.MethodPost+", "+http.MethodDelete)
		}
	case "/sim/stats":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, reqID, http.MethodGet)
			return
		}
		s.handleStats(w, r, reqID)
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	default:
		writeError(w, reqID, apiError{status: http.StatusNotFound, typ: "not_found_error", msg: "Not found: " + r.URL.Path})
	}
}

// tierFor resolves apiKey's tier: SetKeyTier, then a sk-ant-sim-<tier>- prefix,
// then the default. s.mu must be held.
func (s *Server) tierFor(apiKey string) string {
	if t, ok := s.tierOf[apiKey]; ok {
		return t
	}
	if name, ok := simPrefix(apiKey); ok {
		if _, ok := s.tiers[name]; ok {
			return name
		}
	}
	return s.defaultTier
}

// setTier resets the key's buckets, full, to tier's limits.
func (st *keyState) setTier(tier string, tiers map[string]Limits, now time.Time) {
	l := tiers[tier]
	st.tier = tier
	st.req = newBucket(l.RequestsPerMinute, now)
	st.in = newBucket(l.InputTokensPerMinute, now)
	st.out = newBucket(l.OutputTokensPerMinute, now)
}

func (st *keyState) refill(now time.Time) {
	st.req.refill(now)
	st.in.refill(now)
	st.out.refill(now)
}

// rateHeaders describes the key's buckets as Anthropic's rate-limit headers.
func (st *keyState) rateHeaders(now time.Time) http.Header {
	h := make(http.Header)
	put := func(name string, limit, remaining int64, reset time.Time) {
		h.Set("anthropic-ratelimit-"+name+"-limit", itoa(limit))
		h.Set("anthropic-ratelimit-"+name+"-remaining", itoa(remaining))
		h.Set("anthropic-ratelimit-"+name+"-reset", formatReset(reset))
	}
	for _, b := range []struct {
		name string
		b    *bucket
	}{{"requests", &st.req}, {"input-tokens", &st.in}, {"output-tokens", &st.out}} {
		if !b.b.unlimited() {
			put(b.name, b.b.limit, b.b.remaining(), b.b.fullAt(now))
		}
	}
	if !st.in.unlimited() && !st.out.unlimited() {
		reset := st.in.fullAt(now)
		if o := st.out.fullAt(now); o.After(reset) {
			reset = o
		}
		put("tokens", st.in.limit+st.out.limit, st.in.remaining()+st.out.remaining(), reset)
	}
	return h
}

// formatReset renders t as RFC 3339 in UTC, rounded up to the whole second so
// that a client waiting until then finds the bucket full.
func formatReset(t time.Time) string {
	t = t.UTC()
	if r := t.Truncate(time.Second); !r.Equal(t) {
		t = r.Add(time.Second)
	}
	return t.Format(time.RFC3339)
}

// apiKey reads the key from x-api-key or, failing that, a bearer token.
func apiKey(r *http.Request) string {
	if k := strings.TrimSpace(r.Header.Get("x-api-key")); k != "" {
		return k
	}
	const bearer = "bearer "
	if a := r.Header.Get("Authorization"); len(a) > len(bearer) && strings.EqualFold(a[:len(bearer)], bearer) {
		return strings.TrimSpace(a[len(bearer):])
	}
	return ""
}

// simPrefix returns NAME for keys of the form sk-ant-sim-NAME-....
func simPrefix(apiKey string) (string, bool) {
	rest, ok := strings.CutPrefix(apiKey, "sk-ant-sim-")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "-")
	if !ok || name == "" {
		return "", false
	}
	return name, true
}

// fingerprint identifies a key in logs without revealing it.
func fingerprint(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:4])
}
