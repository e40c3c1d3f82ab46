package tlsconfig

import "testing"

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:50052":       true,
		"127.1.2.3:1":           true,
		"[::1]:50052":           true,
		"localhost:50052":       true,
		"LOCALHOST:1":           true,
		":50052":                false, // every interface
		"0.0.0.0:50052":         false,
		"[::]:50052":            false,
		"10.0.0.7:50052":        false,
		"accountpool:50052":     false, // names are not resolved
		"localhost.evil.com:1":  false,
		"[::ffff:127.0.0.1]:1":  true,
		"not an address":        false,
		"127.0.0.1":             false, // no port
		"[fe80::1%eth0]:50052":  false,
		"192.168.1.10:443":      false,
		"localhost.:50052":      false,
		"127.0.0.1.nip.io:1234": false,
	} {
		if got := IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
