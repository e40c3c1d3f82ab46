package delegate

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
)

// progressEventsPerStep is how many stream progress events an attempt
// sends at one interval before the interval doubles. With the defaults
// (5s, 8) an attempt's events cover 40s, 80s, 160s and 320s: 32 events
// reach the 10-minute attempt timeout, so three attempts stay well inside
// Activity's cap of 128 progress events per activity.
const (
	progressEventsPerStep = 8
	maxStreamProgress     = 4 * progressEventsPerStep
)

// streamMeter turns a streaming answer into bounded progress events: the
// output so far, at most every interval, written in the background so the
// upstream read never waits for Activity.
type streamMeter struct {
	run      *taskRun
	ctx      context.Context
	attempt  attempt
	started  time.Time
	schedule progressSchedule
	chars    int64
	inFlight bool // guarded by the run's mu
}

// progressSchedule says when an attempt's next progress event is due: the
// first one interval after the start, then every interval, the interval
// doubling after every progressEventsPerStep events, and none after
// maxStreamProgress.
type progressSchedule struct {
	next     time.Time
	interval time.Duration
	sent     int
}

func newProgressSchedule(start time.Time, interval time.Duration) progressSchedule {
	return progressSchedule{next: start.Add(interval), interval: interval}
}

// take reports whether an event is due at now and, if so, counts it.
func (s *progressSchedule) take(now time.Time) bool {
	if s.sent >= maxStreamProgress || now.Before(s.next) {
		return false
	}
	s.sent++
	if s.sent%progressEventsPerStep == 0 {
		s.interval *= 2
	}
	s.next = now.Add(s.interval)
	return true
}

func (run *taskRun) newStreamMeter(ctx context.Context, a attempt) *streamMeter {
	now := run.r.cfg.Now()
	return &streamMeter{run: run, ctx: ctx, attempt: a, started: now, schedule: newProgressSchedule(now, run.r.cfg.ProgressInterval)}
}

// add counts a text delta and, when an event is due and the previous one
// has been written, writes a progress event in the background.
func (m *streamMeter) add(delta string) {
	m.chars += int64(utf8.RuneCountInString(delta))
	if !m.run.activityStarted {
		return
	}
	m.run.mu.Lock()
	busy := m.inFlight
	m.run.mu.Unlock()
	if busy {
		return // the previous event is still being written; try at the next delta
	}
	now := m.run.r.cfg.Now()
	if !m.schedule.take(now) {
		return
	}
	m.run.mu.Lock()
	m.inFlight = true
	m.run.mu.Unlock()
	chars, elapsed := m.chars, now.Sub(m.started)
	m.run.progress.Add(1)
	go func() {
		defer m.run.progress.Done()
		m.write(chars, elapsed)
		m.run.mu.Lock()
		m.inFlight = false
		m.run.mu.Unlock()
	}()
}

// write records one stream progress event. Output tokens are estimated
// from the characters received (the upstream reports them only at the
// end), the same way the pool estimates them.
func (m *streamMeter) write(chars int64, elapsed time.Duration) {
	run, a := m.run, m.attempt
	tokens := (chars + 3) / 4
	run.enqueue(m.ctx, targetActivity, activityv1.ActivityService_TrackProgress_FullMethodName, fmt.Sprintf("tracking stream progress of attempt %d", a.number), &activityv1.TrackProgressRequest{
		OrganizationId: run.p.OrganizationID,
		ActivityId:     run.p.activityID,
		Message:        fmt.Sprintf("attempt %d on account %s: streaming, about %d output tokens so far after %s", a.number, a.accountName, tokens, elapsed.Round(time.Second)),
		Data: mustStruct(map[string]any{
			"attempt":                a.number,
			"account_id":             a.accountID,
			"streaming":              true,
			"output_chars":           chars,
			"output_tokens_estimate": tokens,
			"elapsed_ms":             elapsed.Milliseconds(),
		}),
	}, &activityv1.TrackProgressResponse{})
}
