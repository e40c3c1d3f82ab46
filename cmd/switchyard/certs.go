package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// defaultIdentities are the certificates `switchyard certs` issues when
// none are named: one per service, with the host names docker-compose.yml
// gives them, and one for clients (grpcurl, the health command, the
// dashboard).
var defaultIdentities = []tlsconfig.Identity{
	{Name: "orchestrator", Hosts: []string{"orchestrator"}},
	{Name: "accountpool", Hosts: []string{"accountpool", "accountpool-1", "accountpool-2"}},
	{Name: "activity", Hosts: []string{"activity"}},
	{Name: "client", Hosts: []string{"dashboard"}},
}

func runCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", "Creates a development CA and a certificate per service, for mutual TLS between the services:\n"+
		"DIR/ca.pem, DIR/ca-key.pem and DIR/NAME.pem, DIR/NAME-key.pem. Each argument NAME=host[,host...] issues one\n"+
		"certificate (valid for its hosts and for localhost, 127.0.0.1 and ::1); without arguments: orchestrator,\n"+
		"accountpool, activity and client, with docker-compose.yml's host names. Existing files are kept, so it\n"+
		"can be run again to add a certificate. For development and tests: production certificates come from\n"+
		"your platform's CA.", stderr)
	dir := fs.String("dir", "", "directory to write into (created 0700); required")
	validity := fs.Duration("validity", 365*24*time.Hour, "how long the certificates are valid")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required: the directory to write the certificates into")
	}
	ids := defaultIdentities
	if fs.NArg() > 0 {
		ids = nil
		for _, arg := range fs.Args() {
			name, hosts, _ := strings.Cut(arg, "=")
			id := tlsconfig.Identity{Name: name}
			if hosts != "" {
				id.Hosts = strings.Split(hosts, ",")
			}
			ids = append(ids, id)
		}
	}
	written, err := tlsconfig.IssueDevelopment(*dir, ids, *validity, time.Now())
	for _, f := range written {
		fmt.Fprintln(stdout, "wrote", f)
	}
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if len(written) == 0 {
		fmt.Fprintln(stdout, "every certificate exists already; nothing written")
	}
	return nil
}
