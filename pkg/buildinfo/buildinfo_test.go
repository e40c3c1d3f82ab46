package buildinfo_test

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/buildinfo"
)

func TestInfo(t *testing.T) {
	in := buildinfo.From(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "378cb5da5c16aaaa"}, {Key: "vcs.modified", Value: "true"},
	}})
	require.Equal(t, "378cb5da5c16+dirty", in.ServiceVersion(), "no module version: the short revision")
	require.Equal(t, "378cb5da5c16aaaa+dirty", in.RevisionText())
	require.Equal(t, "v1.2.3", buildinfo.From(&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}).ServiceVersion())
	none := buildinfo.From(&debug.BuildInfo{})
	require.Equal(t, "(devel)", none.ServiceVersion())
	require.Equal(t, "switchyard (devel), "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH, none.String())
}
