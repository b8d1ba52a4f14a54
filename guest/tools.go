//go:build tools

package guest

// The guest initramfs is built by u-root's own builder (guest/build.sh runs
// `go build github.com/u-root/u-root`), at the version this module pins.
// Importing the builder's packages under the "tools" build tag keeps
// `go mod tidy` from dropping those requirements (the usual Go idiom for tool
// dependencies).
import (
	_ "github.com/dustin/go-humanize"
	_ "github.com/u-root/gobusybox/src/pkg/golang"
	_ "github.com/u-root/mkuimage/uimage/mkuimage"
	_ "github.com/u-root/u-root/pkg/libinit"
	_ "github.com/u-root/uio/llog"
)
