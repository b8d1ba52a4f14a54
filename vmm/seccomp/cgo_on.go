//go:build cgo

package seccomp

// cgoBuild: this kvmlab links the C library (a plain go build on a host
// with a C compiler; make build sets CGO_ENABLED=0), and glibc makes calls
// of its own in new threads (see VMMRules).
const cgoBuild = true
