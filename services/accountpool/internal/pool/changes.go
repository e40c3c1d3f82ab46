package pool

// Changes returns a channel that receives soon after anything ListAccounts
// shows of the organization may have changed through this process: a lease
// granted or expired, a request settled (capacity, a cool-down, the
// breaker), an admin change, or a reload of the organization's accounts
// after another process changed them in the store. A change made while a
// wake-up is pending is coalesced into it, and wake-ups may be spurious, so
// a watcher reads the accounts again and compares. Some changes send
// nothing: capacity refilling with time, cool-downs and breakers running
// out, and live state changed by another replica sharing it (Redis); a
// watcher also reads again periodically for those.
//
// The channel is never closed; call stop, which may be called more than
// once, when done watching.
func (p *Pool) Changes(orgID string) (changed <-chan struct{}, stop func()) {
	return p.changes.Subscribe(orgID)
}
