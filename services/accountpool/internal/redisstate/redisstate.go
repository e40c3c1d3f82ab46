// Package redisstate is pool.State on Redis, shared by every AccountPool
// replica of a deployment: capacity handed out by one replica is seen by
// all, a cool-down or breaker learned through one is honoured by all, and a
// lease issued by one settles through any.
//
// Every policy stays in package pool; this package stores records and runs
// the pool's functions on them in optimistic compare-and-set transactions:
// it reads a record's value, runs the function, and a Lua script writes the
// new values only if every key still holds the value the function saw
// (otherwise it answers with the current values and the function runs
// again). Records are compact binary strings (codec.go), one key per
// record, namespaced per deployment and per organization; the values this
// process last read or wrote are kept in memory, so a reservation right
// after the selection's read is one round trip.
//
// Leases live in a sorted set by expiry; settled and expired ones in a
// second, by the time they are forgotten. Session pins are a hash per
// organization with a sorted set by last use. Every key has an idle expiry
// in real time, so an organization that goes away leaves nothing behind:
// the state is soft, and a Redis that loses it (a restart without
// persistence) costs only what the pool relearns from the upstream.
//
// Keys hold an organization's id in a hash tag, but the lease sets are
// shared by all organizations: the scripts need a single Redis primary
// (replicas and Sentinel for failover are fine; Redis Cluster is not
// supported).
package redisstate

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
)

// Config configures a State.
type Config struct {
	// Client is the Redis connection; required. It should not retry
	// commands itself (redis.Options.MaxRetries -1): a transaction whose
	// answer was lost is resolved by the next compare-and-set, and a
	// blind resend of an applied reservation would answer "lease id in
	// use" while its capacity stays held until the lease expires.
	Client redis.UniversalClient
	// Namespace separates deployments that share one Redis; every key
	// starts with it. Default "switchyard".
	Namespace string
	// ExpiryCheckInterval is how often at most this process looks in Redis
	// for leases past their expiry: ExpireLeases runs on every selection,
	// and a lease expires minutes after it is issued, so checking on every
	// call would spend a round trip for nothing. Default 100ms; negative
	// checks on every call.
	ExpiryCheckInterval time.Duration
	// RecordTTL is how long a record, pin or lease nobody touches stays in
	// Redis (real time). Default 24h.
	RecordTTL time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// State is pool.State on Redis. It is safe for concurrent use; Close stops
// its subscription.
type State struct {
	client      redis.UniversalClient
	ns          string
	expiryEvery time.Duration
	recordTTL   time.Duration
	logger      *slog.Logger

	cache valueCache
	freed pool.Signals
	// writers serializes this process's transactions per organization
	// (striped); see run.
	writers [numStripes]sync.Mutex
	// nextExpiry is when, in Unix ns of the real clock, this process next
	// looks for due leases.
	nextExpiry atomic.Int64

	sub  *redis.PubSub
	done chan struct{}

	// id names this process among the replicas; replicas is how many
	// were alive at the last heartbeat (see heartbeat).
	id       string
	replicas atomic.Int64
	stop     chan struct{}
	beating  chan struct{}
}

var _ pool.State = (*State)(nil)

// maxConflicts bounds how often one transaction retries after another
// changed its keys first; past it the caller gets an error rather than a
// livelock.
const maxConflicts = 64

// numStripes is how many writer locks organizations hash to.
const numStripes = 256

// New returns a State and starts its subscription to the deployment's
// freed-capacity notifications. It does not wait for Redis: a Redis that
// is down shows in the calls' errors.
func New(cfg Config) (*State, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisstate: Client is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "switchyard"
	}
	if cfg.ExpiryCheckInterval == 0 {
		cfg.ExpiryCheckInterval = 100 * time.Millisecond
	}
	if cfg.RecordTTL <= 0 {
		cfg.RecordTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &State{
		client:      cfg.Client,
		ns:          escape(cfg.Namespace),
		expiryEvery: cfg.ExpiryCheckInterval,
		recordTTL:   cfg.RecordTTL,
		logger:      cfg.Logger,
		done:        make(chan struct{}),
		id:          uuid.NewString(),
		stop:        make(chan struct{}),
		beating:     make(chan struct{}),
	}
	s.sub = s.client.PSubscribe(context.Background(), s.ns+":freed:*")
	go s.listen()
	go s.heartbeat()
	return s, nil
}

// Close stops the subscription and the heartbeat. It does not close the
// client.
func (s *State) Close() error {
	close(s.stop)
	<-s.beating
	err := s.sub.Close()
	<-s.done
	return err
}

// Heartbeats: every replica writes its id with the time into one sorted
// set each heartbeatInterval; a replica not heard from for replicaTimeout
// is gone.
const (
	heartbeatInterval = time.Second
	replicaTimeout    = 5 * time.Second
)

// heartbeat keeps this process in the deployment's replica set and
// Replicas up to date.
func (s *State) heartbeat() {
	defer close(s.beating)
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		s.beat()
		select {
		case <-s.stop:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.client.ZRem(ctx, s.ns+":replicas", s.id)
			cancel()
			return
		case <-t.C:
		}
	}
}

func (s *State) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), heartbeatInterval)
	defer cancel()
	now := time.Now()
	k := s.ns + ":replicas"
	var card *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, k, redis.Z{Score: float64(now.UnixMilli()), Member: s.id})
		p.ZRemRangeByScore(ctx, k, "-inf", strconv.FormatInt(now.Add(-replicaTimeout).UnixMilli(), 10))
		card = p.ZCard(ctx, k)
		p.PExpire(ctx, k, 10*replicaTimeout)
		return nil
	})
	if err == nil {
		s.replicas.Store(max(1, card.Val()))
	}
}

// Namespace is the prefix of every key of this state.
func (s *State) Namespace() string { return s.ns }

// Replicas is how many AccountPool replicas shared this state at the last
// heartbeat that reached Redis; 0 before the first.
func (s *State) Replicas() int { return int(s.replicas.Load()) }

// Ping checks that Redis answers.
func (s *State) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

// listen turns freed-capacity messages from every replica into local
// wake-ups. go-redis resubscribes by itself after a reconnect; messages
// published meanwhile are lost, which only makes waiters wake at the time
// they computed.
func (s *State) listen() {
	defer close(s.done)
	prefix := s.ns + ":freed:"
	for m := range s.sub.Channel() {
		s.freed.Notify(strings.TrimPrefix(m.Channel, prefix))
	}
}

// escape makes s safe as one component of a key: ids and quota keys are
// caller-chosen text, and a ':' or a '}' in one must not let it spell
// another organization's key. Plain ids pass unchanged; anything else is
// base64url after a '~', which plain ids never contain.
func escape(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "~" + base64.RawURLEncoding.EncodeToString([]byte(s))
		}
	}
	return s
}

func (s *State) orgPrefix(org string) string { return s.ns + ":{" + escape(org) + "}:" }

// recordKeys are a ref's three keys: its account's breaker, its quota
// key's cool-down, and its quota key's buckets for its family.
func (s *State) recordKeys(r pool.Ref) [3]string {
	p, q := s.orgPrefix(r.OrgID), escape(r.QuotaKey)
	return [3]string{p + "b:" + escape(r.AccountID), p + "c:" + q, p + "q:" + escape(string(r.Family)) + ":" + q}
}

func (s *State) leaseKey(org, id string) string { return s.orgPrefix(org) + "l:" + escape(id) }
func (s *State) openLeases() string             { return s.ns + ":leases" }
func (s *State) doneLeases() string             { return s.ns + ":forget" }
func (s *State) channel(org string) string      { return s.ns + ":freed:" + org }
func (s *State) pinKeys(org string) []string {
	p := s.orgPrefix(org)
	return []string{p + "pins", p + "pinlru"}
}

// unavailable wraps a Redis error as pool.ErrStateUnavailable, unless the
// caller's context ended, which is the caller's doing.
func unavailable(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return fmt.Errorf("%w: redis: %v", pool.ErrStateUnavailable, err)
}

// refSet is a RefSet prepared by a State: the keys, computed once.
type refSet struct {
	state *State
	refs  []pool.Ref
	keys  []string // three per ref, as recordKeys
}

func (rs *refSet) Refs() []pool.Ref { return rs.refs }

// Prepare implements pool.State.
func (s *State) Prepare(refs []pool.Ref) pool.RefSet {
	rs := &refSet{state: s, refs: refs, keys: make([]string, 0, 3*len(refs))}
	for _, r := range refs {
		k := s.recordKeys(r)
		rs.keys = append(rs.keys, k[:]...)
	}
	return rs
}

// Read implements pool.State: one MGET of every record.
func (s *State) Read(ctx context.Context, set pool.RefSet, fn func(int, pool.Records)) error {
	rs, ok := set.(*refSet)
	if !ok || rs.state != s {
		rs = s.Prepare(set.Refs()).(*refSet)
	}
	if len(rs.refs) == 0 {
		return nil
	}
	vals, err := s.client.MGet(ctx, rs.keys...).Result()
	if err != nil {
		return unavailable(ctx, err)
	}
	strs := make([]string, len(vals))
	for i, v := range vals {
		strs[i], _ = v.(string)
	}
	s.cache.putAll(rs.keys, strs)
	var l pool.Live
	for i := range rs.refs {
		s.decodeLive(strs[3*i:3*i+3], rs.keys[3*i:3*i+3], &l)
		fn(i, l.Records())
	}
	return nil
}

// decodeLive decodes a ref's three values. A value that does not decode is
// read as a zero record and logged: the state is soft, and the next write
// replaces it.
func (s *State) decodeLive(vals, keys []string, l *pool.Live) {
	errs := [3]error{decodeBreaker(vals[0], &l.Breaker), decodeCooldown(vals[1], &l.Cooldown), decodeBuckets(vals[2], &l.Buckets)}
	for i, err := range errs {
		if err != nil {
			s.logger.Warn("a live-state record in Redis does not decode; reading it as empty", "key", keys[i], "error", err)
		}
	}
}

// decodeRecords decodes a ref's three values for a transaction, which must
// not write over a value it cannot read: one from a newer version (during a
// rolling upgrade), or damaged.
func decodeRecords(vals, keys []string, l *pool.Live) error {
	errs := [3]error{decodeBreaker(vals[0], &l.Breaker), decodeCooldown(vals[1], &l.Cooldown), decodeBuckets(vals[2], &l.Buckets)}
	for i, err := range errs {
		if err != nil {
			return unreadable(keys[i], err)
		}
	}
	return nil
}

// errUnreadable marks a transaction that met a value it cannot read.
var errUnreadable = errors.New("unreadable value")

func unreadable(key string, err error) error {
	return fmt.Errorf("redisstate: %s holds a value this version cannot read (written by a newer version, or damaged); "+
		"if no newer version runs, delete the key to reset it: %w: %w", key, errUnreadable, err)
}

func encodeLive(l *pool.Live) [3]string {
	return [3]string{encodeBreaker(l.Breaker), encodeCooldown(l.Cooldown), encodeBuckets(l.Buckets)}
}

// Update implements pool.State.
func (s *State) Update(ctx context.Context, r pool.Ref, fn func(*pool.Live) error) error {
	keys := s.recordKeys(r)
	var l pool.Live
	return s.transact(ctx, r.OrgID, keys[:], func(cur []string, t *txn) error {
		if err := decodeRecords(cur, keys[:], &l); err != nil {
			return err
		}
		if err := fn(&l); err != nil {
			return err
		}
		records := encodeLive(&l)
		t.set(records[:]...)
		t.keepUntil(1, l.Cooldown.Until)
		t.notify = true
		return nil
	})
}

// Reserve implements pool.State.
func (s *State) Reserve(ctx context.Context, lease *pool.Lease, fn func(*pool.Live) error) error {
	rk := s.recordKeys(lease.Ref)
	lk := s.leaseKey(lease.Ref.OrgID, lease.ID)
	keys := []string{rk[0], rk[1], rk[2], lk}
	var l pool.Live
	// Lease ids are random: the key is new, unless something is very wrong,
	// which the set then finds.
	err := s.transactFrom(ctx, lease.Ref.OrgID, keys, 3, "", func(cur []string, t *txn) error {
		if cur[3] != "" {
			return fmt.Errorf("redisstate: lease id %s is already in use", lease.ID)
		}
		if err := decodeRecords(cur[:3], keys[:3], &l); err != nil {
			return err
		}
		if err := fn(&l); err != nil {
			return err
		}
		live := encodeLive(&l)
		t.set(live[0], live[1], live[2], encodeLease(*lease, pool.LeaseOpen))
		t.keepUntil(1, l.Cooldown.Until)
		t.zadd(s.openLeases(), lease.ExpireTime, lk)
		return nil
	})
	return err
}

// Settle implements pool.State.
func (s *State) Settle(ctx context.Context, orgID, accountID, leaseID string, fallback pool.Ref, fn func(pool.Lease, pool.LeaseStatus, *pool.Live) error) error {
	_, err := s.onLease(ctx, orgID, s.leaseKey(orgID, leaseID), accountID, &fallback, func(l pool.Lease, was pool.LeaseStatus, live *pool.Live) (pool.LeaseStatus, bool, error) {
		if err := fn(l, was, live); err != nil {
			return 0, false, err
		}
		return pool.LeaseSettled, was != pool.LeaseSettled, nil
	})
	return err
}

// onLease runs fn on a lease and the records it reserved from, in one
// transaction that also writes the status fn returns (and whether to wake
// waiters). A lease that is unknown, or of another account than accountID
// (when that is set), is left alone and fn runs on fallback's records, or
// not at all when fallback is nil.
//
// ran reports whether fn's last run is what was committed: false when the
// lease turned out unknown and there was no fallback.
func (s *State) onLease(ctx context.Context, orgID, lk, accountID string, fallback *pool.Ref, fn func(pool.Lease, pool.LeaseStatus, *pool.Live) (pool.LeaseStatus, bool, error)) (ran bool, err error) {
	// A lease this process issued is in the cache; one issued by another
	// replica costs a read.
	leaseVal, ok := s.cache.value(lk)
	if !ok {
		var err error
		if leaseVal, err = s.client.Get(ctx, lk).Result(); err != nil && !errors.Is(err, redis.Nil) {
			return false, unavailable(ctx, err)
		}
	}
	for range maxConflicts {
		lease, was, err := decodeLease(leaseVal)
		if err != nil {
			return false, unreadable(lk, err)
		}
		if was != pool.LeaseUnknown && accountID != "" && lease.Ref.AccountID != accountID {
			lease, was = pool.Lease{}, pool.LeaseUnknown
		}
		ref := fallback
		if was != pool.LeaseUnknown {
			ref = &lease.Ref
		}
		if ref == nil {
			return false, nil
		}
		rk := s.recordKeys(*ref)
		keys := []string{lk, rk[0], rk[1], rk[2]}
		var live pool.Live
		latest := leaseVal
		err = s.transactFrom(ctx, orgID, keys, 0, leaseVal, func(cur []string, t *txn) error {
			if cur[0] != leaseVal {
				latest = cur[0]
				return errLeaseChanged
			}
			if err := decodeRecords(cur[1:], keys[1:], &live); err != nil {
				return err
			}
			next, notify, err := fn(lease, was, &live)
			if err != nil {
				return err
			}
			newLease := cur[0]
			if was != pool.LeaseUnknown && next != was {
				newLease = encodeLease(lease, next)
				if was == pool.LeaseOpen {
					t.zrem(s.openLeases(), lk)
					t.zadd(s.doneLeases(), forgetTime(lease), lk)
				}
			}
			records := encodeLive(&live)
			t.set(newLease, records[0], records[1], records[2])
			t.keepUntil(2, live.Cooldown.Until)
			t.notify = notify
			return nil
		})
		if errors.Is(err, errLeaseChanged) {
			leaseVal = latest
			continue
		}
		if err != nil {
			return false, err
		}
		if was != pool.LeaseUnknown {
			// Settled or expired: nobody here needs the lease again.
			s.cache.drop(lk)
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: redis: lease %s kept changing", pool.ErrStateContended, lk)
}

var errLeaseChanged = errors.New("lease changed")

// forgetTime is when a settled or expired lease is forgotten: one lease
// lifetime after its expiry.
func forgetTime(l pool.Lease) time.Time {
	return l.ExpireTime.Add(max(l.ExpireTime.Sub(l.IssueTime), time.Second))
}

// ExpireLeases implements pool.State. It looks in Redis at most every
// ExpiryCheckInterval.
func (s *State) ExpireLeases(ctx context.Context, now time.Time, release func(pool.Lease, *pool.Live)) ([]pool.Lease, error) {
	if s.expiryEvery > 0 {
		wall := time.Now().UnixNano()
		next := s.nextExpiry.Load()
		if wall < next || !s.nextExpiry.CompareAndSwap(next, wall+int64(s.expiryEvery)) {
			return nil, nil
		}
	}
	score := strconv.FormatInt(micros(now), 10)
	due, err := s.client.ZRangeByScore(ctx, s.openLeases(), &redis.ZRangeBy{Min: "-inf", Max: score, Count: 256}).Result()
	if err != nil {
		return nil, unavailable(ctx, err)
	}
	var expired []pool.Lease
	for _, lk := range due {
		org, ok := s.orgOfLeaseKey(lk)
		if !ok {
			s.client.ZRem(ctx, s.openLeases(), lk)
			continue
		}
		// The transaction may run the function more than once: only what
		// its committed run saw counts.
		var got *pool.Lease
		var seen pool.Lease
		var seenStatus pool.LeaseStatus
		ran, err := s.onLease(ctx, org, lk, "", nil, func(l pool.Lease, was pool.LeaseStatus, live *pool.Live) (pool.LeaseStatus, bool, error) {
			got, seen, seenStatus = nil, l, was
			if was != pool.LeaseOpen || l.ExpireTime.After(now) {
				return was, false, nil
			}
			release(l, live)
			got = &l
			return pool.LeaseExpired, true, nil
		})
		if errors.Is(err, errUnreadable) {
			// Perhaps a newer version's: leave it, but behind the others,
			// so that it cannot hold up the expiry of every lease.
			s.logger.WarnContext(ctx, "an open lease in Redis cannot be read; looking at it again in a minute", "key", lk, "error", err)
			if err := s.client.ZAdd(ctx, s.openLeases(), redis.Z{Score: float64(micros(now.Add(time.Minute))), Member: lk}).Err(); err != nil {
				return expired, unavailable(ctx, err)
			}
			continue
		}
		if err != nil {
			return expired, err
		}
		var fix error
		switch {
		case !ran:
			// Its key is gone (the idle expiry, or a Redis that lost or
			// evicted it): nothing is left to find its reservation by.
			fix = s.client.ZRem(ctx, s.openLeases(), lk).Err()
		case got != nil:
			expired = append(expired, *got)
		case seenStatus != pool.LeaseOpen:
			// Settled or expired, yet still listed as open: forget it.
			_, fix = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, s.openLeases(), lk)
				p.ZAdd(ctx, s.doneLeases(), redis.Z{Score: float64(micros(forgetTime(seen))), Member: lk})
				return nil
			})
		default:
			// Listed earlier than it expires: list it when it does.
			fix = s.client.ZAdd(ctx, s.openLeases(), redis.Z{Score: float64(micros(seen.ExpireTime)), Member: lk}).Err()
		}
		if fix != nil {
			return expired, unavailable(ctx, fix)
		}
	}
	if err := forgetScript.Run(ctx, s.client, []string{s.doneLeases()}, score, 1000).Err(); err != nil {
		return expired, unavailable(ctx, err)
	}
	for _, l := range expired {
		s.freed.Notify(l.Ref.OrgID)
	}
	return expired, nil
}

// orgOfLeaseKey reads the organization back out of a lease key.
func (s *State) orgOfLeaseKey(lk string) (string, bool) {
	rest, ok := strings.CutPrefix(lk, s.ns+":{")
	if !ok {
		return "", false
	}
	esc, _, ok := strings.Cut(rest, "}:")
	if !ok {
		return "", false
	}
	if b64, enc := strings.CutPrefix(esc, "~"); enc {
		raw, err := base64.RawURLEncoding.DecodeString(b64)
		return string(raw), err == nil
	}
	return esc, true
}

// micros is t in Unix microseconds: sorted-set scores are doubles, exact
// to the microsecond for the next few centuries.
func micros(t time.Time) int64 { return t.UnixMicro() }

// Share implements pool.State: the state in Redis is the whole
// deployment's.
func (s *State) Share() float64 { return 1 }

// Freed implements pool.State.
func (s *State) Freed(orgID string) <-chan struct{} { return s.freed.Wait(orgID) }

// NextCursor implements pool.State.
func (s *State) NextCursor(ctx context.Context, orgID string) (uint64, error) {
	k := s.orgPrefix(orgID) + "cursor"
	var incr *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, k)
		p.PExpire(ctx, k, s.recordTTL)
		return nil
	})
	if err != nil {
		return 0, unavailable(ctx, err)
	}
	return uint64(incr.Val() - 1), nil
}

// SessionAccount implements pool.State.
func (s *State) SessionAccount(ctx context.Context, orgID, sessionID string, now time.Time, ttl time.Duration) (string, error) {
	acct, err := sessionScript.Run(ctx, s.client, s.pinKeys(orgID), sessionID, micros(now), ttl.Microseconds()).Text()
	if err != nil {
		return "", unavailable(ctx, err)
	}
	return acct, nil
}

// PinSession implements pool.State.
func (s *State) PinSession(ctx context.Context, orgID, sessionID, accountID string, now time.Time, ttl time.Duration, maxPins int) error {
	keep := max(ttl, s.recordTTL).Milliseconds()
	err := pinScript.Run(ctx, s.client, s.pinKeys(orgID), sessionID, accountID, micros(now), ttl.Microseconds(), maxPins, keep).Err()
	if err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

// UnpinSession implements pool.State.
func (s *State) UnpinSession(ctx context.Context, orgID, sessionID, accountID string) error {
	if err := unpinScript.Run(ctx, s.client, s.pinKeys(orgID), sessionID, accountID).Err(); err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

// valueCache holds the value this process last read from or wrote to each
// record key, and the leases it issued until they settle here. It only
// saves the read before a compare-and-set: a stale value makes the set
// fail and return the current one. Leases settled by another replica stay
// until the cache forgets everything, which it does when it grows past
// maxCached keys.
type valueCache struct {
	mu sync.Mutex
	m  map[string]string
}

const maxCached = 1 << 17

func (c *valueCache) value(k string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *valueCache) lookup(keys []string, into []string) (missing []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		v, ok := c.m[k]
		if !ok {
			missing = append(missing, i)
		}
		into[i] = v
	}
	return missing
}

func (c *valueCache) putAll(keys, vals []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m)+len(keys) > maxCached {
		c.m = make(map[string]string, len(keys))
	}
	for i, k := range keys {
		c.m[k] = vals[i]
	}
}

func (c *valueCache) drop(keys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.m, k)
	}
}
