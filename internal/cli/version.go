package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version describes the running binary in one line, from the build
// information the Go toolchain writes into every binary (runtime/debug,
// what `go version -m` prints):
//
//	kvmlab version v0.0.0-20261204193012-dd1667b6f0e1+dirty, revision dd1667b6f0e1...+dirty, go1.26.8 linux/amd64
//
// The module version is a pseudo-version built from the VCS revision; the
// revision is the commit the binary was built from, +dirty when the work
// tree had changes. A binary built without VCS information (go build
// -buildvcs=false, or outside a repository) says "revision unknown".
func Version(prog string) string {
	version, revision, goVersion := "(unknown)", "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		revision = vcsRevision(bi.Settings)
	}
	return fmt.Sprintf("%s version %s, revision %s, %s %s/%s", prog, version, revision, goVersion, runtime.GOOS, runtime.GOARCH)
}

// vcsRevision reads the commit (vcs.revision) and whether the tree was
// modified (vcs.modified) from the build settings.
func vcsRevision(settings []debug.BuildSetting) string {
	rev, dirty := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "+dirty"
	}
	return rev
}
