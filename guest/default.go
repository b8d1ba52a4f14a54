package guest

import (
	"os"
	"path/filepath"

	"kvmlab/internal/cli"
)

// CacheDir is where kvmlab keeps what it builds and fetches:
// $XDG_CACHE_HOME/kvmlab, else ~/.cache/kvmlab (the XDG Base Directory
// Specification's default), else a directory under the system's temporary
// one.
func CacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kvmlab")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "kvmlab")
	}
	return filepath.Join(os.TempDir(), "kvmlab-cache")
}

// Default returns the default guest's kernel and initramfs, which 'make
// guest' links into CacheDir()/default.
func Default() (kernel, initrd string) {
	d := filepath.Join(CacheDir(), "default")
	return filepath.Join(d, "bzImage"), filepath.Join(d, "initramfs.cpio")
}

// Resolve fills in the default guest when neither *kernel nor *initrd is
// given, and checks that both exist: each refusal is one line naming the
// flag and the fix (a cli.UsageError) after cmd, the command asking.
func Resolve(cmd string, kernel, initrd *string) error {
	if *kernel == "" && *initrd == "" {
		*kernel, *initrd = Default()
	}
	for _, p := range []struct{ flag, path string }{{"--kernel", *kernel}, {"--initrd", *initrd}} {
		if p.path == "" {
			return cli.Usagef("%s: %s is missing: give both --kernel and --initrd, or neither for the default guest", cmd, p.flag)
		}
		if _, err := os.Stat(p.path); err != nil {
			return cli.Usagef("%s: %s %s: %v (run 'make guest' for the default guest)", cmd, p.flag, p.path, err)
		}
	}
	return nil
}
