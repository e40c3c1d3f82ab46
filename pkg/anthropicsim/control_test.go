package anthropicsim_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

// Without the control token, or with another one, every /sim/ endpoint
// answers 401 in Anthropic's error shape and changes nothing.
func TestControlNeedsTheToken(t *testing.T) {
	e := newEnv(t)
	token := e.sim.ControlToken()
	for name, header := range map[string]map[string]string{
		"no header":            nil,
		"wrong token":          {"Authorization": "Bearer " + token + "x"},
		"a prefix of it":       {"Authorization": "Bearer " + token[:len(token)-1]},
		"not bearer":           {"Authorization": "Basic " + token},
		"empty bearer":         {"Authorization": "Bearer "},
		"the token as api key": {"x-api-key": token},
	} {
		for _, c := range []struct{ method, path, body string }{
			{http.MethodPost, "/sim/faults", `{"api_key":"k1","status":401}`},
			{http.MethodPost, "/sim/faults", `{"api_key":"*","status":401}`},
			{http.MethodDelete, "/sim/faults", ""},
			{http.MethodGet, "/sim/stats?api_key=k1", ""},
			{http.MethodGet, "/sim/unknown", ""},
		} {
			status, h, m := e.do(t, c.method, c.path, header, c.body)
			require.Equal(t, http.StatusUnauthorized, status, "%s: %s %s", name, c.method, c.path)
			typ, msg := apiErr(t, h, m)
			require.Equal(t, "authentication_error", typ)
			require.Contains(t, msg, "Authorization: Bearer <control token>")
			require.NotContains(t, msg, token, "the answer never holds the token")
			require.Equal(t, `Bearer realm="switchyard-sim"`, h.Get("WWW-Authenticate"))
		}
	}
	// Nothing was scripted: k1 and every other key answer normally.
	e.ok(t, "k1", params("hi"))
	e.ok(t, "k2", params("hi"))

	// The right token works, with the scheme in any case.
	status, _, _ := e.do(t, http.MethodPost, "/sim/faults", map[string]string{"Authorization": "bearer " + token}, `{"api_key":"k1","status":401,"count":1}`)
	require.Equal(t, http.StatusNoContent, status)
	e.fail(t, "k1", params("hi"), http.StatusUnauthorized)
	status, _, m := e.do(t, http.MethodGet, "/sim/stats?api_key=k1", e.ctl, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 2.0, m["requests"], "one normal answer, one scripted 401")
}

// The Messages API authenticates as Anthropic does, by API key: it needs
// no control token, and /healthz needs nothing.
func TestMessagesAndHealthNeedNoControlToken(t *testing.T) {
	e := newEnv(t)
	e.ok(t, "sk-ant-any", params("hi"))
	status, _, _ := e.do(t, http.MethodGet, "/healthz", nil, "")
	require.Equal(t, http.StatusOK, status)
}

func TestControlTokenFromConfig(t *testing.T) {
	const token = "a-token-of-sixteen+chars"
	sim := anthropicsim.New(anthropicsim.Config{ControlToken: token})
	require.Equal(t, token, sim.ControlToken())
	srv := newServer(t, sim)
	for tok, want := range map[string]int{token: http.StatusOK, anthropicsim.New(anthropicsim.Config{}).ControlToken(): http.StatusUnauthorized} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/sim/stats?api_key=k", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, want, res.StatusCode)
	}
}

// Generated tokens are new each time and shaped like Switchyard's other
// tokens (sy_...), which log scrubbers mask.
func TestGeneratedControlTokens(t *testing.T) {
	a, b := anthropicsim.New(anthropicsim.Config{}).ControlToken(), anthropicsim.New(anthropicsim.Config{}).ControlToken()
	require.NotEqual(t, a, b)
	for _, tok := range []string{a, b, anthropicsim.GenerateControlToken()} {
		require.Regexp(t, `^sy_sim_[A-Z2-7]{26}$`, tok)
		require.NoError(t, anthropicsim.CheckControlToken(tok))
	}
}

func TestCheckControlTokenSaysWhatToFix(t *testing.T) {
	for tok, want := range map[string]string{
		"short":                              "5 characters; use 16 to 1024",
		strings.Repeat("x", 1025):            "1025 characters",
		"sixteen chars with spaces":          "character 8 is not",
		"tab\tinside-the-token-here":         "character 4 is not",
		"non-ascii-token-é-here":             "printable ASCII",
		"line-break-in-token\nsecond-line-x": "printable ASCII",
	} {
		err := anthropicsim.CheckControlToken(tok)
		require.ErrorContains(t, err, want, "%q", tok)
		require.NotContains(t, err.Error(), tok)
	}
	require.PanicsWithValue(t, "anthropicsim: Config.ControlToken: the control token has 5 characters; use 16 to 1024 (or leave it empty to have one generated)",
		func() { anthropicsim.New(anthropicsim.Config{ControlToken: "short"}) })
}
