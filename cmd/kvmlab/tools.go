//go:build tools

package main

// `kvmlab bench` builds gokvm, our closest peer, at the version go.mod pins
// (gokvmVersion) and runs it as a separate program. This import, under the
// "tools" build tag, only keeps that requirement in go.mod; gokvm is never
// linked into kvmlab.
import _ "github.com/bobuhiro11/gokvm/vmm"
