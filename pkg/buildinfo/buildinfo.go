// Package buildinfo describes the running binary from its build
// information (runtime/debug.ReadBuildInfo): what `switchyard version`
// prints, what the start-up line logs and what telemetry reports as
// service.version.
package buildinfo

import (
	"cmp"
	"runtime"
	"runtime/debug"
)

// Info is the binary's build.
type Info struct {
	// Version is the module version: a tag, a pseudo-version, or (devel).
	Version string
	// Revision is the VCS revision, empty when unknown (a build without
	// VCS stamping, such as one from a tree without .git).
	Revision string
	// Dirty is set when the tree had uncommitted changes.
	Dirty bool
	// Time is the revision's commit time (vcs.time), empty when unknown.
	Time string
	// GoVersion is the toolchain that built it.
	GoVersion string
}

// Read returns this binary's build.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return From(bi)
}

// From reads an Info out of build information.
func From(bi *debug.BuildInfo) Info {
	in := Info{Version: cmp.Or(bi.Main.Version, "(devel)"), GoVersion: cmp.Or(bi.GoVersion, runtime.Version())}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Dirty = s.Value == "true"
		}
	}
	return in
}

// RevisionText is the revision with "+dirty" when the tree had changes.
func (in Info) RevisionText() string {
	if in.Dirty && in.Revision != "" {
		return in.Revision + "+dirty"
	}
	return in.Revision
}

// ServiceVersion is the version as a telemetry resource reports it: the
// module version when it is a real one, else the first 12 characters of
// the revision (with "+dirty"), else (devel).
func (in Info) ServiceVersion() string {
	if in.Version != "" && in.Version != "(devel)" {
		return in.Version
	}
	if in.Revision == "" {
		return "(devel)"
	}
	short := in.Revision
	if len(short) > 12 {
		short = short[:12]
	}
	if in.Dirty {
		short += "+dirty"
	}
	return short
}

// String is the one-line description `switchyard version` prints.
func (in Info) String() string {
	s := "switchyard " + in.Version
	if r := in.RevisionText(); r != "" {
		s += ", revision " + r
	}
	if in.Time != "" {
		s += ", committed " + in.Time
	}
	return s + ", " + in.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
