package emuhost

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"time"
)

// This file answers `kvmlab check`: whether the pieces the emulated hosts
// need are on this machine. It returns data; the CLI prints it.

// MinQEMU is the oldest QEMU the emulated host works with: older ones
// emulate AMD SVM's debug intercepts wrongly and lock the emulated host up
// at the first single-step (tests/deps.sh, which installs a newer one, says
// more).
var MinQEMU = [2]int{9, 1}

// qemuVersionLine matches the first line of qemu-system-x86_64 --version.
var qemuVersionLine = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(\.\d+)?`)

// ParseQEMUVersion reads "QEMU emulator version 10.0.2 (Debian ...)" into
// its major and minor numbers and the version as printed.
func ParseQEMUVersion(out string) (major, minor int, version string, ok bool) {
	m := qemuVersionLine.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, "", false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	return major, minor, m[1] + "." + m[2] + m[3], true
}

// QEMUStatus is what CheckQEMU found.
type QEMUStatus struct {
	Path    string // qemu-system-x86_64's path; "" when not installed
	Version string // as it prints it; "" when it could not be read
	OK      bool   // MinQEMU or newer: the emulated AMD host can run
}

// CheckQEMU finds qemu-system-x86_64 and reads its version, with stdin
// closed and a time limit: an emulator must not take the check over.
func CheckQEMU(ctx context.Context) QEMUStatus {
	path, err := exec.LookPath(qemuBinary)
	if err != nil {
		return QEMUStatus{}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	major, minor, v, ok := ParseQEMUVersion(string(out))
	if !ok {
		return QEMUStatus{Path: path}
	}
	return QEMUStatus{Path: path, Version: v,
		OK: major > MinQEMU[0] || major == MinQEMU[0] && minor >= MinQEMU[1]}
}

// BuildTools is what the emulated host builds its /init (hostinit) with:
// go, and kvmlab's source where this binary was built.
type BuildTools struct {
	Go        string // go's path, when GoErr is nil
	GoErr     error
	Source    string // the hostinit source directory
	SourceErr error
}

// OK tells whether both are there.
func (b BuildTools) OK() bool { return b.GoErr == nil && b.SourceErr == nil }

// CheckBuildTools looks for go in PATH and for hostinit's source beside
// this file's.
func CheckBuildTools() BuildTools {
	var b BuildTools
	b.Go, b.GoErr = exec.LookPath("go")
	_, self, _, _ := runtime.Caller(0)
	b.Source = filepath.Join(filepath.Dir(self), "hostinit")
	_, b.SourceErr = os.Stat(b.Source)
	return b
}
