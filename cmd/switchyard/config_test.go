package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// A variable with a value its setting does not accept stops the command
// before anything starts, naming the variable and the form it takes.
func TestBadVariablesStopTheCommand(t *testing.T) {
	// Should a value wrongly pass, the command stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct{ cmd, env, value, want string }{
		{"orchestrator", envFailPoolDown, "yes", `SWITCHYARD_FAIL_WHEN_POOL_UNAVAILABLE: "yes" is not a boolean; use true or false (or 1, 0, t, f)`},
		{"orchestrator", envLegacyEnvFallback, "on", `SWITCHYARD_LEGACY_ENVIRONMENT_FALLBACK: "on" is not a boolean`},
		{"activity", envInsecureNoAuth, "on", `SWITCHYARD_INSECURE_NO_AUTH: "on" is not a boolean`},
		{"orchestrator", envMaxWait, "10", `SWITCHYARD_MAX_WAIT: "10" is not a duration; use a Go duration such as 10s or 1m30s`},
		{"orchestrator", envAttemptTimeout, "30", `SWITCHYARD_ATTEMPT_TIMEOUT: "30" is not a duration; use a Go duration such as 10s or 1m30s`},
		{"orchestrator", envAttemptTimeout, "0", `SWITCHYARD_ATTEMPT_TIMEOUT: "0" is not a positive duration; use a Go duration such as 10s or 1m30s`},
		{"orchestrator", envSelectTimeout, "0s", `SWITCHYARD_SELECT_TIMEOUT: "0s" is not a positive duration`},
		{"orchestrator", envProgressInterval, "-5s", `SWITCHYARD_PROGRESS_INTERVAL: "-5s" is not a positive duration`},
		{"orchestrator", envDrainTimeout, "0", `SWITCHYARD_DRAIN_TIMEOUT: "0" is not a positive duration`},
		{"dev", envDrainTimeout, "forever", `SWITCHYARD_DRAIN_TIMEOUT: "forever" is not a duration`},
		{"activity", envAbandonGrace, "0", `SWITCHYARD_ABANDON_GRACE: "0" is not a positive duration`},
		{"activity", envReaperInterval, "0", `SWITCHYARD_REAPER_INTERVAL: "0" is not a positive duration`},
		{"accountpool", envLeaseTimeout, "0", `SWITCHYARD_LEASE_TIMEOUT: "0" is not a positive duration`},
		{"dev", envLeaseTimeout, "2", `SWITCHYARD_LEASE_TIMEOUT: "2" is not a duration`},
		{"accountpool", envMaxAccountsPerOrg, "0", `SWITCHYARD_MAX_ACCOUNTS_PER_ORGANIZATION: "0" is out of range; use a whole number of at least 1`},
		{"dev", envMaxLabelsPerAccount, "65", `SWITCHYARD_MAX_LABELS_PER_ACCOUNT: "65" is out of range; use a whole number from 1 to 64`},
		{"orchestrator", envOutboxMax, "0", `SWITCHYARD_OUTBOX_MAX_RECORDS: "0" is out of range; use a whole number of at least 1`},
		{"orchestrator", envOutboxMax, "-7", `SWITCHYARD_OUTBOX_MAX_RECORDS: "-7" is out of range; use a whole number of at least 1`},
		{"orchestrator", envOutboxMax, "1e5", `SWITCHYARD_OUTBOX_MAX_RECORDS: "1e5" is not an integer; use a whole number such as 100000`},
		{"orchestrator", envOutboxMax, "99999999999999999999", `SWITCHYARD_OUTBOX_MAX_RECORDS: "99999999999999999999" is out of range; use a whole number from 1 to 9223372036854775807`},
	} {
		t.Run(tc.cmd+"/"+tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			err := run(ctx, []string{tc.cmd}, io.Discard, io.Discard)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// A flag with a value its setting does not accept fails the parse, naming
// the flag and the form it takes.
func TestBadFlagsStopTheCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"orchestrator", "-fail-when-pool-unavailable=yes"}, `invalid boolean value "yes" for -fail-when-pool-unavailable: not a boolean; use true or false`},
		{[]string{"orchestrator", "-legacy-environment-fallback-on-invalid-key=yes"}, `invalid boolean value "yes" for -legacy-environment-fallback-on-invalid-key: not a boolean`},
		{[]string{"orchestrator", "-max-wait", "10"}, `invalid value "10" for flag -max-wait: not a duration; use a Go duration such as 10s or 1m30s`},
		{[]string{"orchestrator", "-attempt-timeout", "0"}, `invalid value "0" for flag -attempt-timeout: not a positive duration`},
		{[]string{"dev", "-select-timeout", "-1s"}, `invalid value "-1s" for flag -select-timeout: not a positive duration`},
		{[]string{"orchestrator", "-outbox-max-records", "0"}, `invalid value "0" for flag -outbox-max-records: out of range`},
		{[]string{"activity", "-abandon-grace", "0"}, `invalid value "0" for flag -abandon-grace: not a positive duration`},
		{[]string{"accountpool", "-lease-timeout", "0s"}, `invalid value "0s" for flag -lease-timeout: not a positive duration`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			require.ErrorContains(t, run(ctx, tc.args, io.Discard, io.Discard), tc.want)
		})
	}
}

// orchestratorSettings parses args over the orchestrator's settings alone.
func orchestratorSettings(t *testing.T, args ...string) (orchestratorFlags, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var of orchestratorFlags
	of.register(fs, "", "")
	return of, parseFlags(fs, args)
}

func TestEveryBadVariableIsReportedAtOnce(t *testing.T) {
	t.Setenv(envMaxWait, "10")
	t.Setenv(envOutboxMax, "many")
	_, err := orchestratorSettings(t)
	require.ErrorContains(t, err, envMaxWait+`: "10"`)
	require.ErrorContains(t, err, envOutboxMax+`: "many"`)
}

// A variable is only the default of its flag: a flag that is given wins,
// also over a variable its setting would refuse.
func TestAGivenFlagOverridesItsVariable(t *testing.T) {
	t.Setenv(envMaxWait, "10")
	t.Setenv(envAttemptTimeout, "3m")
	of, err := orchestratorSettings(t, "-max-wait", "1s")
	require.NoError(t, err)
	require.Equal(t, time.Second, of.maxWait)
	require.Equal(t, 3*time.Minute, of.attemptTimeout, "the variable is the default")
}

func TestSettingsTakeTheirAcceptedForms(t *testing.T) {
	for value, want := range map[string]bool{"1": true, "t": true, "TRUE": true, "True": true, "0": false, "f": false, "FALSE": false} {
		t.Setenv(envFailPoolDown, value)
		of, err := orchestratorSettings(t)
		require.NoError(t, err, value)
		require.Equal(t, want, of.failPoolDown, value)
	}
	t.Setenv(envFailPoolDown, "")
	of, err := orchestratorSettings(t)
	require.NoError(t, err)
	require.False(t, of.failPoolDown, "an empty variable is unset")
	of, err = orchestratorSettings(t, "-fail-when-pool-unavailable")
	require.NoError(t, err)
	require.True(t, of.failPoolDown, "a boolean flag needs no value")

	t.Setenv(envAttemptTimeout, "1m30s")
	t.Setenv(envOutboxMax, "250")
	of, err = orchestratorSettings(t)
	require.NoError(t, err)
	require.Equal(t, 90*time.Second, of.attemptTimeout)
	require.Equal(t, 250, of.outboxMax)
}

// The environment fallback for a rejected default key is off unless the
// operator turns it on, and reaches the orchestrator's configuration.
func TestLegacyEnvironmentFallbackIsOffByDefault(t *testing.T) {
	config := func(of orchestratorFlags) bool {
		return of.config(slog.New(slog.DiscardHandler), telemetry.Providers{}, secret.String{}, security{}).LegacyEnvironmentFallbackOnInvalidKey
	}
	of, err := orchestratorSettings(t)
	require.NoError(t, err)
	require.False(t, config(of))
	t.Setenv(envLegacyEnvFallback, "true")
	of, err = orchestratorSettings(t)
	require.NoError(t, err)
	require.True(t, config(of))
	of, err = orchestratorSettings(t, "-legacy-environment-fallback-on-invalid-key=false")
	require.NoError(t, err)
	require.False(t, config(of), "the flag wins over the variable")
}

// -max-wait 0 disables waiting, as the README says: the orchestrator
// library reads 0 as its default (10s) and a negative wait as none.
func TestZeroMaxWaitDisablesWaiting(t *testing.T) {
	config := func(of orchestratorFlags) time.Duration {
		return of.config(slog.New(slog.DiscardHandler), telemetry.Providers{}, secret.String{}, security{}).MaxWait
	}
	for value, want := range map[string]time.Duration{"": 10 * time.Second, "250ms": 250 * time.Millisecond, "0": -1, "0s": -1, "-1s": -1} {
		t.Setenv(envMaxWait, value)
		of, err := orchestratorSettings(t)
		require.NoError(t, err, value)
		require.Equal(t, want, config(of), "SWITCHYARD_MAX_WAIT=%q", value)
	}
	of, err := orchestratorSettings(t, "-max-wait", "0")
	require.NoError(t, err)
	require.Negative(t, config(of), "-max-wait 0 disables waiting")
}

// -h shows the default a variable gives, so an operator sees what runs.
func TestHelpShowsTheVariablesDefault(t *testing.T) {
	t.Setenv(envMaxWait, "3s")
	var errOut bytes.Buffer
	require.ErrorIs(t, run(context.Background(), []string{"orchestrator", "-h"}, io.Discard, &errOut), flag.ErrHelp)
	require.Regexp(t, `-max-wait value\n\s+how long .*0 disables waiting \(SWITCHYARD_MAX_WAIT\) \(default 3s\)`, errOut.String())
}

// README.md's configuration table is the settings table: every variable
// the commands read is in it with its flags, and nothing else is.
func TestReadmeConfigurationTableIsTheSettings(t *testing.T) {
	code := map[string]string{}
	for _, s := range settings {
		require.NotContains(t, code, s.env, "settings lists %s twice", s.env)
		code[s.env] = strings.Join(slices.Sorted(slices.Values(s.flags)), " ")
	}
	require.Equal(t, code, readmeSettings(t), "README.md's configuration table (right) and the settings in config.go (left) differ")
}

// Every flag a command's -h lists that names a variable defaults to a
// variable of the settings table, which lists the flag; every flag in the
// table is one a command has.
func TestEveryFlagIsInTheSettings(t *testing.T) {
	byEnv := map[string]setting{}
	for _, s := range settings {
		byEnv[s.env] = s
	}
	registered := map[string]bool{}
	for _, cmd := range commands(t) {
		var errOut bytes.Buffer
		err := run(context.Background(), []string{cmd, "-h"}, io.Discard, &errOut)
		if err == nil {
			continue // a command without flags, such as version
		}
		require.ErrorIs(t, err, flag.ErrHelp, cmd)
		for name, usage := range helpFlags(t, errOut.String()) {
			registered[name] = true
			vars := variableName.FindAllString(usage, -1)
			for _, v := range vars {
				_, ok := byEnv[v]
				require.True(t, ok, "%s -%s names %s, which is not in settings (nor so in README.md)", cmd, name, v)
			}
			if len(vars) > 0 {
				require.True(t, slices.ContainsFunc(vars, func(v string) bool { return slices.Contains(byEnv[v].flags, name) }),
					"%s -%s defaults to one of %v, but settings lists the flag for none of them", cmd, name, vars)
			}
		}
	}
	for _, s := range settings {
		for _, f := range s.flags {
			require.True(t, registered[f], "settings lists -%s for %s, but no command has it", f, s.env)
		}
	}
}

// variableName is how an environment variable looks in a flag's usage.
var variableName = regexp.MustCompile(`\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b`)

// commands are the commands the top-level usage lists.
func commands(t *testing.T) []string {
	t.Helper()
	_, list, ok := strings.Cut(usage, "\ncommands:\n")
	require.True(t, ok)
	list, _, _ = strings.Cut(list, "\n\n")
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		cmds = append(cmds, strings.Fields(line)[0])
	}
	require.Contains(t, cmds, "dev")
	return cmds
}

// helpFlags reads the flags and their usage from a command's -h.
func helpFlags(t *testing.T, help string) map[string]string {
	t.Helper()
	_, list, ok := strings.Cut(help, "\nflags (")
	require.True(t, ok, help)
	flags := map[string]string{}
	name := ""
	for _, line := range strings.Split(list, "\n")[1:] {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(rest, " ")
			flags[name] = ""
		} else if name != "" {
			flags[name] += line
		}
	}
	require.NotEmpty(t, flags, help)
	return flags
}

// readmeSettings reads the variables and flags of README.md's
// configuration table: each variable to its flags, sorted.
func readmeSettings(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../README.md")
	require.NoError(t, err)
	defer f.Close()
	names, flags := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`"), regexp.MustCompile("`-([a-z0-9-]+)`")
	table := map[string]string{}
	section := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			section = line == "## Configuration"
		}
		cells := strings.Split(line, "|")
		if !section || len(cells) < 4 || !strings.HasPrefix(line, "| `") {
			continue
		}
		var fl []string
		for _, m := range flags.FindAllStringSubmatch(cells[2], -1) {
			fl = append(fl, m[1])
		}
		slices.Sort(fl)
		vars := names.FindAllStringSubmatch(cells[1], -1)
		require.NotEmpty(t, vars, "a row without a variable: %s", line)
		for _, m := range vars {
			require.NotContains(t, table, m[1], "README.md lists %s twice", m[1])
			table[m[1]] = strings.Join(fl, " ")
		}
	}
	require.NotEmpty(t, table, "README.md has no configuration table")
	return table
}
