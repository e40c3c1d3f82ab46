//go:build !unix

package grpcserver

// openFileLimit is unknown off Unix; DefaultMaxConnections then takes its
// ceiling.
func openFileLimit() (uint64, bool) { return 0, false }
