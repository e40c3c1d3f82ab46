package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"text/template"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/secret"
)

// The simulator's control token, which its /sim/ endpoints require. The
// token itself comes from the environment only: a flag would show it in
// the process list.
const (
	envSimControlToken = "SWITCHYARD_SIM_CONTROL_TOKEN"
	// envSimControlTokenFile names a file holding it.
	envSimControlTokenFile = "SWITCHYARD_SIM_CONTROL_TOKEN_FILE"
)

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sim", "Runs the Anthropic Messages API simulator (see pkg/anthropicsim for its key conventions).", stderr)
	var addr, tier string
	var lf logFlags
	var cf simControlFlags
	fs.StringVar(&addr, "addr", env(envSimAddr, defaultSimAddr), "simulator HTTP listen address ("+envSimAddr+")")
	fs.StringVar(&tier, "default-tier", "scale", "rate-limit tier of keys that do not name one")
	cf.register(fs, "")
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "sim")
	if _, ok := anthropicsim.DefaultTiers()[tier]; !ok {
		return fmt.Errorf("-default-tier %q is not a tier; use one of tier1, tier2, tier3, tier4, start, build, scale", tier)
	}
	token, generated, err := cf.token("-control-token-file")
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the simulator: %w", addr, err)
	}
	sim := anthropicsim.New(anthropicsim.Config{DefaultTier: tier, ControlToken: token.Reveal(), Logger: logger.With("service", "sim")})
	banner := map[string]string{"Addr": lis.Addr().String()}
	if generated {
		banner["Token"] = sim.ControlToken()
	}
	if err := simBanner.Execute(stdout, banner); err != nil {
		_ = lis.Close()
		return err
	}
	return serveSim(ctx, lis, sim, logger)
}

// simBanner is what `switchyard sim` prints at start (stdout, never the
// log): the control token when it generated one.
var simBanner = template.Must(template.New("sim").Parse(`Anthropic simulator on http://{{.Addr}}
{{if .Token}}Control token for this run (new at every start; the /sim/ endpoints need it):
  export SIM_TOKEN={{.Token}}
{{else}}Control token: the one configured (` + envSimControlToken + ` or ` + envSimControlTokenFile + `).
{{end}}  curl -H "Authorization: Bearer $SIM_TOKEN" 'http://{{.Addr}}/sim/stats?api_key=sk-ant-sim-tier1-x'
`))

// serveSim serves the simulator on lis until ctx is cancelled.
func serveSim(ctx context.Context, lis net.Listener, sim *anthropicsim.Server, logger *slog.Logger) error {
	return serveHTTP(ctx, lis, sim, "the Anthropic simulator", logger)
}

// simControlFlags choose the simulator's control token.
type simControlFlags struct {
	tokenFile string
}

func (f *simControlFlags) register(fs *flag.FlagSet, prefix string) {
	envVar(fs, &f.tokenFile, prefix+"control-token-file", envSimControlTokenFile, "", anyString,
		"file holding the simulator's control token, which its /sim/ endpoints require as 'Authorization: Bearer <token>' (or the token itself in "+
			envSimControlToken+"); with neither, a new token is generated and printed at start")
}

// token is the control token from SWITCHYARD_SIM_CONTROL_TOKEN or the file
// (not both), or, with neither, a new one (generated true). flagName names
// the file flag in errors; no error holds the token.
func (f *simControlFlags) token(flagName string) (tok secret.String, generated bool, err error) {
	inline := env(envSimControlToken, "")
	switch {
	case inline != "" && f.tokenFile != "":
		return secret.String{}, false, fmt.Errorf("set either %s or %s (%s), not both", envSimControlToken, flagName, envSimControlTokenFile)
	case f.tokenFile != "":
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			// The path is configuration, not the secret: it may be named.
			return secret.String{}, false, fmt.Errorf("%s (%s): %w", flagName, envSimControlTokenFile, err)
		}
		tok := strings.TrimSpace(string(b))
		if err := anthropicsim.CheckControlToken(tok); err != nil {
			return secret.String{}, false, fmt.Errorf("%s (%s): %w", flagName, envSimControlTokenFile, err)
		}
		return secret.New(tok), false, nil
	case inline != "":
		if err := anthropicsim.CheckControlToken(inline); err != nil {
			return secret.String{}, false, fmt.Errorf("%s: %w", envSimControlToken, err)
		}
		return secret.New(inline), false, nil
	}
	return secret.New(anthropicsim.GenerateControlToken()), true, nil
}

// anyString is envVar's parse for a setting that takes any text.
func anyString(s string) (string, error) { return s, nil }
