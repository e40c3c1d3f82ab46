package redisstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
)

// Records are stored as compact binary values, one Redis string per record:
// a format byte, then fixed-width little-endian fields and length-prefixed
// strings. A zero record is no key at all. The format byte lets a later
// version refuse (rather than misread) a value it does not know.
const formatV1 = 1

// zeroTime is how a zero time.Time is written: its UnixNano is undefined.
const zeroTime = math.MinInt64

var errCorrupt = errors.New("redisstate: value is not in a known format")

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)    { e.b = append(e.b, v) }
func (e *encoder) i32(v int32)   { e.b = binary.LittleEndian.AppendUint32(e.b, uint32(v)) }
func (e *encoder) i64(v int64)   { e.b = binary.LittleEndian.AppendUint64(e.b, uint64(v)) }
func (e *encoder) f64(v float64) { e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v)) }
func (e *encoder) str(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.i64(zeroTime)
		return
	}
	e.i64(t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = errCorrupt
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
func (d *decoder) u8() uint8    { return d.take(1)[0] }
func (d *decoder) i32() int32   { return int32(binary.LittleEndian.Uint32(d.take(4))) }
func (d *decoder) i64() int64   { return int64(binary.LittleEndian.Uint64(d.take(8))) }
func (d *decoder) f64() float64 { return math.Float64frombits(binary.LittleEndian.Uint64(d.take(8))) }
func (d *decoder) str() string {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)-k) {
		d.err = errCorrupt
		return ""
	}
	d.b = d.b[k:]
	return string(d.take(int(n)))
}
func (d *decoder) time() time.Time {
	n := d.i64()
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
func (d *decoder) version() {
	if v := d.u8(); d.err == nil && v != formatV1 {
		d.err = fmt.Errorf("%w (format %d)", errCorrupt, v)
	}
}
func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorrupt
	}
	return d.err
}

func encodeBreaker(b pool.Breaker) string {
	if b == (pool.Breaker{}) {
		return ""
	}
	e := encoder{b: make([]byte, 0, 48+len(b.ProbeLease))}
	e.u8(formatV1)
	if b.Open {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.i32(b.Failures)
	e.i32(b.Opens)
	e.time(b.OpenUntil)
	e.str(b.ProbeLease)
	e.time(b.ProbeUntil)
	return string(e.b)
}

func decodeBreaker(s string, b *pool.Breaker) error {
	*b = pool.Breaker{}
	if s == "" {
		return nil
	}
	d := decoder{b: []byte(s)}
	d.version()
	b.Open = d.u8() == 1
	b.Failures, b.Opens = d.i32(), d.i32()
	b.OpenUntil, b.ProbeLease, b.ProbeUntil = d.time(), d.str(), d.time()
	return d.done()
}

func encodeCooldown(c pool.Cooldown) string {
	if c == (pool.Cooldown{}) {
		return ""
	}
	e := encoder{b: make([]byte, 0, 16+len(c.Reason))}
	e.u8(formatV1)
	e.time(c.Until)
	e.str(string(c.Reason))
	return string(e.b)
}

func decodeCooldown(s string, c *pool.Cooldown) error {
	*c = pool.Cooldown{}
	if s == "" {
		return nil
	}
	d := decoder{b: []byte(s)}
	d.version()
	c.Until, c.Reason = d.time(), pool.CooldownReason(d.str())
	return d.done()
}

func encodeBuckets(bs pool.Buckets) string {
	if bs == (pool.Buckets{}) {
		return ""
	}
	e := encoder{b: make([]byte, 0, 1+3*32)}
	e.u8(formatV1)
	for _, b := range [3]pool.Bucket{bs.Requests, bs.Input, bs.Output} {
		e.f64(b.Level)
		e.time(b.At)
		e.i64(b.Limit)
		e.i64(b.Reserved)
	}
	return string(e.b)
}

func decodeBuckets(s string, bs *pool.Buckets) error {
	*bs = pool.Buckets{}
	if s == "" {
		return nil
	}
	d := decoder{b: []byte(s)}
	d.version()
	for _, b := range [3]*pool.Bucket{&bs.Requests, &bs.Input, &bs.Output} {
		b.Level, b.At, b.Limit, b.Reserved = d.f64(), d.time(), d.i64(), d.i64()
		if math.IsNaN(b.Level) || math.IsInf(b.Level, 0) {
			d.err = fmt.Errorf("%w (bucket level %v)", errCorrupt, b.Level)
		}
	}
	return d.done()
}

// A lease value is its status, then the lease.
func encodeLease(l pool.Lease, status pool.LeaseStatus) string {
	e := encoder{b: make([]byte, 0, 160)}
	e.u8(formatV1)
	e.u8(uint8(status))
	e.str(l.ID)
	e.str(l.Ref.OrgID)
	e.str(l.Ref.AccountID)
	e.str(l.Ref.QuotaKey)
	e.str(string(l.Ref.Family))
	e.str(l.AccountName)
	e.str(l.Tier)
	e.i64(l.Limits.RPM)
	e.i64(l.Limits.InputTPM)
	e.i64(l.Limits.OutputTPM)
	e.i64(l.Reserved.Requests)
	e.i64(l.Reserved.Input)
	e.i64(l.Reserved.Output)
	if l.Probe {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.time(l.IssueTime)
	e.time(l.ExpireTime)
	return string(e.b)
}

func decodeLease(s string) (pool.Lease, pool.LeaseStatus, error) {
	if s == "" {
		return pool.Lease{}, pool.LeaseUnknown, nil
	}
	d := decoder{b: []byte(s)}
	d.version()
	var l pool.Lease
	status := pool.LeaseStatus(d.u8())
	if status != pool.LeaseOpen && status != pool.LeaseExpired && status != pool.LeaseSettled && d.err == nil {
		d.err = fmt.Errorf("%w (lease status %d)", errCorrupt, status)
	}
	l.ID = d.str()
	l.Ref = pool.Ref{OrgID: d.str(), AccountID: d.str(), QuotaKey: d.str(), Family: pool.Family(d.str())}
	l.AccountName, l.Tier = d.str(), d.str()
	l.Limits = pool.Limits{RPM: d.i64(), InputTPM: d.i64(), OutputTPM: d.i64()}
	l.Reserved = pool.Amount{Requests: d.i64(), Input: d.i64(), Output: d.i64()}
	l.Probe = d.u8() == 1
	l.IssueTime, l.ExpireTime = d.time(), d.time()
	if err := d.done(); err != nil {
		return pool.Lease{}, pool.LeaseUnknown, err
	}
	return l, status, nil
}
