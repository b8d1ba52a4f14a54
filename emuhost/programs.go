package emuhost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Programs returns the files that carry host programs into the emulated
// host: each program (a name looked up in PATH, or a path) and every shared
// library `ldd` lists for it, at the same paths, so the dynamic loader in
// the emulated host finds them where it looks. A program reached through a
// symbolic link (mkfs.ext4 -> mke2fs) travels under both names.
//
// The emulated host's root file system is an initramfs with nothing in it
// but hostinit: whatever a test or benchmark runs there (mkfs.ext4, ip,
// qemu-system-x86_64) must come in this way.
func Programs(names ...string) ([]File, error) {
	seen := map[string]bool{}
	var files []File
	add := func(host, path string, mode os.FileMode) {
		if !seen[path] {
			seen[path] = true
			files = append(files, File{HostPath: host, Path: path, Mode: mode})
		}
	}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", n, err)
		}
		if p, err = filepath.Abs(p); err != nil {
			return nil, err
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		add(real, p, 0o755)
		add(real, real, 0o755)
		out, err := exec.Command("ldd", real).Output()
		if err != nil {
			// A static binary makes ldd fail with "not a dynamic
			// executable": it needs nothing more.
			if strings.Contains(string(out), "not a dynamic") || isStatic(real) {
				continue
			}
			return nil, fmt.Errorf("ldd %s: %w", real, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(l) {
				if !strings.HasPrefix(f, "/") {
					continue
				}
				r, err := filepath.EvalSymlinks(f)
				if err != nil {
					continue
				}
				add(r, r, 0o755)
				add(r, f, 0o755) // the name the loader asks for
			}
		}
	}
	return files, nil
}

// isStatic reports whether an ELF file has no program interpreter, i.e.
// needs no dynamic loader.
func isStatic(path string) bool {
	out, err := exec.Command("file", "-L", path).Output()
	return err == nil && strings.Contains(string(out), "statically linked")
}
