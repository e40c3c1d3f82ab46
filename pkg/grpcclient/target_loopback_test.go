package grpcclient

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestPlaintextIsRefusedBeyondThisMachine(t *testing.T) {
	for target, leaves := range map[string]bool{
		"127.0.0.1:50052":                     false,
		"localhost:50052":                     false,
		"[::1]:50052":                         false,
		"127.0.0.1:1,127.0.0.2:2":             false,
		"dns:///localhost:50052":              false,
		"passthrough:///127.0.0.1:50052":      false,
		"unix:///run/switchyard.sock":         false,
		"accountpool:50052":                   true,
		"10.0.0.1:50052":                      true,
		"127.0.0.1:1,10.0.0.2:2":              true, // one remote entry is enough
		"dns:///accountpool.internal:50052":   true,
		"passthrough:///accountpool:50052":    true,
		"dns://8.8.8.8/accountpool.svc:50052": true,
		"dns://10.0.0.53/localhost:50052":     true, // that server may answer anything
		"dns://10.0.0.53/127.0.0.1:50052":     false,
		"dns://10.0.0.53/[::1]:50052":         false,
	} {
		if got := PlaintextOffLoopback(target); got != leaves {
			t.Errorf("PlaintextOffLoopback(%q) = %v, want %v", target, got, leaves)
		}
		conn, err := Dial(Config{Target: target})
		if leaves {
			if err == nil || !strings.Contains(err.Error(), "no TLS is configured") {
				t.Errorf("Dial(%q) without TLS: got %v, want the refusal", target, err)
			}
		} else if err != nil {
			t.Errorf("Dial(%q) on loopback: %v", target, err)
		}
		if conn != nil {
			_ = conn.Close()
		}
		if leaves {
			for _, cfg := range []Config{{Target: target, InsecurePlaintext: true}, {Target: target, TLS: &tls.Config{MinVersion: tls.VersionTLS13}}} {
				conn, err := Dial(cfg)
				if err != nil {
					t.Errorf("Dial(%q) with TLS or the insecure setting: %v", target, err)
					continue
				}
				_ = conn.Close()
			}
		}
	}
}
