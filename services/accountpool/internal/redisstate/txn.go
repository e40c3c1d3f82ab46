package redisstate

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
)

// txn is what one attempt of a transaction writes: the new value of every
// key ("" deletes it), sorted-set changes, and whether to wake waiters.
type txn struct {
	news  []string
	ttls  []int64 // milliseconds, per key
	zkeys []string
	zargs []any // per sorted-set change: op ("a" or "r"), score, member
	// notify publishes a freed-capacity notification for the organization.
	notify bool
	ttl    time.Duration
}

func (t *txn) set(vals ...string) {
	t.news = append(t.news[:0], vals...)
	t.ttls = t.ttls[:0]
	for range vals {
		t.ttls = append(t.ttls, t.ttl.Milliseconds())
	}
}

// keepUntil keeps key i at least until until (real time) plus a margin: a
// spend-limit cool-down may last longer than the idle expiry.
func (t *txn) keepUntil(i int, until time.Time) {
	if d := time.Until(until) + time.Hour; d.Milliseconds() > t.ttls[i] {
		t.ttls[i] = d.Milliseconds()
	}
}

func (t *txn) zadd(key string, at time.Time, member string) {
	t.zkeys = append(t.zkeys, key)
	t.zargs = append(t.zargs, "a", micros(at), member)
}

func (t *txn) zrem(key, member string) {
	t.zkeys = append(t.zkeys, key)
	t.zargs = append(t.zargs, "r", 0, member)
}

// transact runs fn in a compare-and-set transaction over keys, starting
// from the values the cache holds (one MGET for those it does not). fn
// gets the keys' current values and fills t; it runs again, on the values
// that won, whenever another writer got there first.
func (s *State) transact(ctx context.Context, orgID string, keys []string, fn func(cur []string, t *txn) error) error {
	cur := make([]string, len(keys))
	if missing := s.cache.lookup(keys, cur); len(missing) > 0 {
		if err := s.fetch(ctx, keys, missing, cur); err != nil {
			return err
		}
	}
	return s.run(ctx, orgID, keys, cur, fn)
}

// transactFrom is transact with the value of keys[known] already known.
func (s *State) transactFrom(ctx context.Context, orgID string, keys []string, known int, val string, fn func(cur []string, t *txn) error) error {
	cur := make([]string, len(keys))
	missing := s.cache.lookup(keys, cur)
	missing = slices.DeleteFunc(missing, func(i int) bool { return i == known })
	cur[known] = val
	if len(missing) > 0 {
		if err := s.fetch(ctx, keys, missing, cur); err != nil {
			return err
		}
	}
	return s.run(ctx, orgID, keys, cur, fn)
}

func (s *State) fetch(ctx context.Context, keys []string, missing []int, into []string) error {
	ks := make([]string, len(missing))
	for i, m := range missing {
		ks[i] = keys[m]
	}
	vals, err := s.client.MGet(ctx, ks...).Result()
	if err != nil {
		return unavailable(ctx, err)
	}
	for i, m := range missing {
		into[m], _ = vals[i].(string)
	}
	return nil
}

func (s *State) run(ctx context.Context, orgID string, keys, cur []string, fn func(cur []string, t *txn) error) error {
	// Writers of one organization in this process take turns: they would
	// otherwise conflict with each other on its hot keys and retry without
	// end. Only other replicas can then get in between, and there are few.
	mu := &s.writers[stripe(orgID)]
	mu.Lock()
	defer mu.Unlock()
	t := txn{ttl: s.recordTTL}
	for attempt := range maxConflicts {
		if attempt >= 2 {
			// Another replica keeps winning: step aside for a moment.
			time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(50*time.Microsecond))))
		}
		t.news, t.ttls, t.zkeys, t.zargs, t.notify = t.news[:0], t.ttls[:0], t.zkeys[:0], t.zargs[:0], false
		if err := fn(cur, &t); err != nil {
			return err
		}
		channel := ""
		if t.notify {
			channel = s.channel(orgID)
		}
		args := make([]any, 0, 2+3*len(keys)+len(t.zargs))
		args = append(args, len(keys), channel)
		for i := range keys {
			args = append(args, cur[i], t.news[i], t.ttls[i])
		}
		args = append(args, t.zargs...)
		all := append(keys[:len(keys):len(keys)], t.zkeys...)
		res, err := casScript.Run(ctx, s.client, all, args...).Slice()
		if err != nil {
			// The outcome is unknown: the next attempt reads afresh.
			s.cache.drop(keys...)
			return unavailable(ctx, err)
		}
		if ok, _ := res[0].(int64); ok == 1 {
			s.cache.putAll(keys, t.news)
			if t.notify {
				s.freed.Notify(orgID)
			}
			return nil
		}
		if len(res) != len(keys)+1 {
			return fmt.Errorf("%w: redis: unexpected answer from the transaction script", pool.ErrStateUnavailable)
		}
		for i := range keys {
			cur[i], _ = res[i+1].(string)
		}
		s.cache.putAll(keys, cur)
	}
	return fmt.Errorf("%w: redis: %d conflicting writers in a row on %s", pool.ErrStateContended, maxConflicts, keys[0])
}

// stripe picks the writers' lock of an organization.
func stripe(orgID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(orgID))
	return int(h.Sum32() % numStripes)
}

// casScript writes new values only if every key still holds the value the
// caller computed from ("" for no key), then applies the sorted-set
// changes and publishes the notification; otherwise it returns the current
// values. A value equal to the one it replaces is not rewritten.
//
// KEYS: the n record keys, then one key per sorted-set change.
// ARGV: n, channel ("" for none), then per record key: expected, new,
// ttl in ms; then per sorted-set change: op, score, member.
var casScript = redis.NewScript(`
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i]) or ''
  if cur ~= ARGV[3 * i] then
    local vals = {0}
    for j = 1, n do
      vals[j + 1] = redis.call('GET', KEYS[j]) or ''
    end
    return vals
  end
end
for i = 1, n do
  local old, new = ARGV[3 * i], ARGV[3 * i + 1]
  if new == '' then
    if old ~= '' then redis.call('DEL', KEYS[i]) end
  elseif new ~= old then
    redis.call('SET', KEYS[i], new, 'PX', ARGV[3 * i + 2])
  end
end
local a = 3 * n + 3
for j = n + 1, #KEYS do
  if ARGV[a] == 'a' then
    redis.call('ZADD', KEYS[j], ARGV[a + 1], ARGV[a + 2])
  else
    redis.call('ZREM', KEYS[j], ARGV[a + 2])
  end
  a = a + 3
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], '') end
return {1}
`)

// forgetScript deletes the settled and expired leases due to be forgotten.
// KEYS: the forget set. ARGV: now (µs), at most how many.
var forgetScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, k in ipairs(due) do redis.call('DEL', k) end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return #due
`)

// sessionScript returns a session's pin, dropping it when idle for the TTL
// and marking it used otherwise. KEYS: pins hash, last-use set. ARGV:
// session, now (µs), ttl (µs).
var sessionScript = redis.NewScript(`
local used = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not used then return '' end
if tonumber(ARGV[2]) - tonumber(used) >= tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  return ''
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return redis.call('HGET', KEYS[1], ARGV[1]) or ''
`)

// pinScript pins a session, drops pins idle for the TTL and then the least
// recently used beyond the cap. KEYS: pins hash, last-use set. ARGV:
// session, account, now (µs), ttl (µs), cap, key expiry (ms).
var pinScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local idle = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
for _, m in ipairs(idle) do
  redis.call('HDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('HDEL', KEYS[1], old[i]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
`)

// unpinScript removes a session's pin if it names the account. KEYS: pins
// hash, last-use set. ARGV: session, account.
var unpinScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
`)
