package container

// The root file system. A container image is, at bottom, a directory tree
// that becomes the container's "/". Ours is the very tree the kvmlab guest
// boots: the u-root initramfs that `make guest` builds, a "newc" cpio
// archive (the format the kernel unpacks into its initial ramfs). The VM
// hands that archive to its own kernel; the container unpacks it on the host
// and asks the host's kernel to use the directory as its root.
//
// Each run unpacks into a fresh temporary directory, removed at teardown.
// Unpacking the ~18 MB archive takes a few tens of milliseconds, and a fresh
// copy means that what one run writes to its root cannot change the next
// one, as with a VM booting from the same initramfs. A cache keyed by the
// archive's hash would save that time but, to keep runs apart, would need a
// copy-on-write layer on top (overlayfs, as image-based runtimes use): more
// machinery than the lesson needs. Callers that want to reuse a tree pass it
// as Config.Rootfs; it is then used as is, and kept.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultInitrd returns the initramfs that `make guest` leaves in kvmlab's
// cache: $XDG_CACHE_HOME/kvmlab/default/initramfs.cpio, else
// $HOME/.cache/kvmlab/default/initramfs.cpio. When neither exists it
// returns the first, for the error message.
func DefaultInitrd() string {
	var candidates []string
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		candidates = append(candidates, filepath.Join(d, "kvmlab", "default", "initramfs.cpio"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(h, ".cache", "kvmlab", "default", "initramfs.cpio"))
	}
	if len(candidates) == 0 {
		return filepath.Join(os.TempDir(), "kvmlab-cache", "default", "initramfs.cpio")
	}
	for _, c := range candidates {
		if exists(c) {
			return c
		}
	}
	return candidates[0]
}

// mountsUnder lists the mount points at or below dir in this process's
// mount namespace, from /proc/self/mountinfo (proc(5)): the fifth field of
// each line is the mount point, with spaces and such written as octal
// escapes.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	return found, sc.Err()
}

// unescapeMountinfo undoes the kernel's \ooo escaping of mount points.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// removeRoot deletes a root directory the runtime unpacked. It first makes
// sure that nothing is mounted inside it in our mount namespace: the
// container's mounts lived in its own namespace and died with it, but if one
// had leaked here, removing the tree would reach through a bind mount into
// the host's /dev.
func removeRoot(dir string) error {
	if m, err := mountsUnder(dir); err != nil {
		return err
	} else if len(m) > 0 {
		return fmt.Errorf("rootfs: not removing %s: %s is still mounted in the host's mount namespace", dir, m[0])
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return nil
}
