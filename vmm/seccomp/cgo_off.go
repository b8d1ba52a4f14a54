//go:build !cgo

package seccomp

// cgoBuild: this kvmlab is a static Go binary (make build).
const cgoBuild = false
