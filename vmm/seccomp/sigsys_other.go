//go:build !amd64

package seccomp

import "errors"

// ExitStatus is the status a VMM stopped by its filter exits with.
const ExitStatus = 159

func armTrap(Filter, Options) error {
	return errors.New("seccomp: the SIGSYS handler is written for amd64 only: run with --seccomp=false")
}
