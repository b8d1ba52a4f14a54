package emuhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// KVMModules are the kernel modules cached with the host kernel, for both
// emulated hosts: kvm needs irqbypass; kvm-amd (the SVM host's) needs kvm and
// ccp (the AMD crypto coprocessor driver, used for SEV; it loads fine without
// the hardware); kvm-intel (the VT-x host's) needs kvm. tun is not KVM's: it
// gives the emulated host /dev/net/tun, for the TAP devices behind
// virtio-net. Each emulator loads its own subset, in its order
// ([Emulator.modules]): kvm-amd refuses to load on a CPU without SVM, and
// kvm-intel on one without VMX.
var KVMModules = []string{"irqbypass", "ccp", "kvm", "kvm-amd", "kvm-intel", "tun"}

// modules returns the names (of KVMModules) the emulated host loads, in
// load order.
func (e Emulator) modules() []string {
	if e == BochsVMX {
		return []string{"irqbypass", "kvm", "kvm-intel", "tun"}
	}
	return []string{"irqbypass", "ccp", "kvm", "kvm-amd", "tun"}
}

// module returns the cached file of the module named name (one of
// KVMModules).
func (k *Kernel) module(name string) (string, error) {
	for i, m := range KVMModules {
		if m == name && i < len(k.Modules) {
			return k.Modules[i], nil
		}
	}
	return "", fmt.Errorf("host kernel in %s: module %s not cached", k.Dir, name)
}

// HostKernelDirEnv names the environment variable that points [HostKernel]
// at a directory already holding a kernel image and the modules, for use
// without network. The directory may be a previous cache directory, or an
// unpacked kernel package (boot/vmlinuz-*, lib/modules/...).
const HostKernelDirEnv = "KVMLAB_HOST_KERNEL_DIR"

// metaPackage is Debian's package that always depends on the current kernel.
const metaPackage = "linux-image-amd64"

// Kernel is a kernel image plus the KVM modules, ready to boot as the
// emulated host.
type Kernel struct {
	// Package and Version name the Debian package the files came from
	// (e.g. "linux-image-6.1.0-56-amd64", "6.1.192-2"); both are empty for
	// a KVMLAB_HOST_KERNEL_DIR override.
	Package string `json:"package"`
	Version string `json:"version"`
	// Dir is the directory holding the files.
	Dir string `json:"-"`
	// Vmlinuz is the kernel image as packaged (a compressed bzImage).
	Vmlinuz string `json:"-"`
	// Vmlinux is the same kernel uncompressed (an ELF file with a PVH
	// entry point), which QEMU boots without running the decompressor;
	// "" when it could not be extracted (Run then boots Vmlinuz).
	Vmlinux string `json:"-"`
	// Modules are the uncompressed .ko files of KVMModules, in load order.
	Modules []string `json:"-"`
	// CompressedModules tells whether the source shipped the modules
	// compressed (.ko.xz, .ko.zst, .ko.gz); they were decompressed when
	// cached.
	CompressedModules bool `json:"compressed_modules"`
}

var hostKernelMu sync.Mutex

// HostKernel returns the kernel for the emulated host, downloading and
// caching it on first use.
//
// Without KVMLAB_HOST_KERNEL_DIR, it resolves the kernel package that
// linux-image-amd64 depends on (apt-cache depends; apt-get update is run
// once if that finds nothing), downloads it (apt-get download), unpacks it
// (dpkg -x) and keeps the kernel image and the modules of KVMModules under
// ${XDG_CACHE_HOME:-$HOME/.cache}/kvmlab/hostkernel/<package>_<version>/.
// When the package cannot be resolved (no network, no apt), the newest
// complete cache directory is used if there is one.
func HostKernel(ctx context.Context) (*Kernel, error) {
	hostKernelMu.Lock()
	defer hostKernelMu.Unlock()

	base, err := hostKernelCacheBase()
	if err != nil {
		return nil, err
	}
	if dir := os.Getenv(HostKernelDirEnv); dir != "" {
		return kernelFromDir(ctx, dir, base)
	}

	pkg, version, resolveErr := resolveKernelPackage(ctx)
	if resolveErr != nil {
		if k, err := newestCachedKernel(base); err == nil {
			k.Vmlinux = ensureVmlinux(ctx, k.Vmlinuz, k.Dir)
			return k, nil
		}
		return nil, resolveErr
	}
	final := filepath.Join(base, pkg+"_"+version)
	if k, err := loadCachedKernel(final); err == nil {
		k.Vmlinux = ensureVmlinux(ctx, k.Vmlinuz, k.Dir)
		return k, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("host kernel cache: %w", err)
	}
	// Stage next to the final directory, so that a rename publishes the
	// complete directory at once (and a concurrent process either sees
	// nothing or everything).
	removeStaleStaging(base)
	staging, err := os.MkdirTemp(base, ".staging-")
	if err != nil {
		return nil, fmt.Errorf("host kernel cache: %w", err)
	}
	defer os.RemoveAll(staging)
	// apt-get download drops root privileges to the _apt user where it
	// can; let that user write here.
	_ = os.Chmod(staging, 0o777)

	if _, err := runCommand(ctx, staging, "apt-get", "download", pkg+"="+version); err != nil {
		return nil, err
	}
	debs, _ := filepath.Glob(filepath.Join(staging, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s=%s: expected one .deb in %s, found %d", pkg, version, staging, len(debs))
	}
	root := filepath.Join(staging, "root")
	if _, err := runCommand(ctx, staging, "dpkg", "-x", debs[0], root); err != nil {
		return nil, err
	}
	out := filepath.Join(staging, "out")
	k, err := collectKernel(ctx, root, out)
	if err != nil {
		return nil, fmt.Errorf("package %s=%s: %w", pkg, version, err)
	}
	k.Package, k.Version = pkg, version
	ensureVmlinux(ctx, k.Vmlinuz, out)
	if err := writeKernelMeta(out, k); err != nil {
		return nil, err
	}
	if _, err := loadCachedKernel(final); err != nil {
		// An incomplete directory from an older module list (one
		// without tun, or without kvm-intel): move it aside, so that a
		// process still using its files by path loses them only for
		// the moment between the two renames.
		old := filepath.Join(base, ".old-"+filepath.Base(staging))
		if os.Rename(final, old) == nil {
			defer os.RemoveAll(old)
		}
	}
	if err := os.Rename(out, final); err != nil {
		// Another process may have published the same directory first.
		if _, err2 := loadCachedKernel(final); err2 != nil {
			return nil, fmt.Errorf("host kernel cache: %w", err)
		}
	}
	k, err = loadCachedKernel(final)
	if err != nil {
		return nil, err
	}
	k.Vmlinux = ensureVmlinux(ctx, k.Vmlinuz, k.Dir)
	return k, nil
}

// removeStaleStaging removes staging directories left by processes that
// were killed while filling the cache (older than an hour).
func removeStaleStaging(base string) {
	old, _ := filepath.Glob(filepath.Join(base, ".staging-*"))
	for _, d := range old {
		if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > time.Hour {
			os.RemoveAll(d)
		}
	}
}

// hostKernelCacheBase is ${XDG_CACHE_HOME:-$HOME/.cache}/kvmlab/hostkernel.
func hostKernelCacheBase() (string, error) {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("host kernel cache: neither XDG_CACHE_HOME nor HOME is set: %w", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "kvmlab", "hostkernel"), nil
}

// runCommand runs a command and returns its combined output. Its error names
// the command and carries the tail of the output.
func runCommand(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("command `%s` failed: %v\n%s", strings.Join(cmd.Args, " "), err, tail(out.String(), 2000))
	}
	return out.Bytes(), nil
}

// tail returns at most the last n bytes of s, starting at a line boundary
// when it cuts.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…\n" + s
}

// parseAptDepends extracts the linux-image-* package from the output of
// `apt-cache depends linux-image-amd64`.
func parseAptDepends(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimLeft(strings.TrimSpace(sc.Text()), "|")
		dep, ok := strings.CutPrefix(line, "Depends:")
		if !ok {
			continue
		}
		dep = strings.Trim(strings.TrimSpace(dep), "<>")
		if strings.HasPrefix(dep, "linux-image-") && dep != metaPackage {
			return dep
		}
	}
	return ""
}

// parseAptVersion extracts the Version field from `apt-cache show` output.
func parseAptVersion(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// resolveKernelPackage finds the kernel package and its candidate version.
func resolveKernelPackage(ctx context.Context) (pkg, version string, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		if attempt == 1 {
			// The package lists may be missing (fresh container): fetch
			// them once and look again.
			if _, err := runCommand(ctx, "", "apt-get", "update"); err != nil {
				return "", "", err
			}
		}
		out, derr := runCommand(ctx, "", "apt-cache", "depends", metaPackage)
		if derr != nil {
			err = derr
			continue
		}
		pkg = parseAptDepends(string(out))
		if pkg == "" {
			err = fmt.Errorf("command `apt-cache depends %s` named no linux-image package:\n%s", metaPackage, tail(string(out), 2000))
			continue
		}
		out, serr := runCommand(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
		if serr != nil {
			err = serr
			continue
		}
		version = parseAptVersion(string(out))
		if version == "" {
			err = fmt.Errorf("command `apt-cache show --no-all-versions %s` gave no Version:\n%s", pkg, tail(string(out), 2000))
			continue
		}
		return pkg, version, nil
	}
	return "", "", err
}

const kernelMetaFile = "kernel.json"

func writeKernelMeta(dir string, k *Kernel) error {
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, kernelMetaFile), append(b, '\n'), 0o644)
}

// loadCachedKernel reads a complete cache directory, as written by
// HostKernel: vmlinuz, <module>.ko for each of KVMModules, kernel.json.
func loadCachedKernel(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, kernelMetaFile))
	if err != nil {
		return nil, err
	}
	k := &Kernel{}
	if err := json.Unmarshal(b, k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, kernelMetaFile), err)
	}
	k.Dir = dir
	k.Vmlinuz = filepath.Join(dir, "vmlinuz")
	paths := []string{k.Vmlinuz}
	for _, m := range KVMModules {
		p := filepath.Join(dir, m+".ko")
		k.Modules = append(k.Modules, p)
		paths = append(paths, p)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// newestCachedKernel returns the most recently published complete cache
// directory under base.
func newestCachedKernel(base string) (*Kernel, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	type cand struct {
		k   *Kernel
		mod int64
	}
	var cands []cand
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "override-") {
			continue
		}
		dir := filepath.Join(base, e.Name())
		k, err := loadCachedKernel(dir)
		if err != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, kernelMetaFile))
		if err != nil {
			continue
		}
		cands = append(cands, cand{k, st.ModTime().UnixNano()})
	}
	if len(cands) == 0 {
		return nil, errors.New("no cached host kernel")
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].mod > cands[j].mod })
	return cands[0].k, nil
}

// kernelFromDir serves the KVMLAB_HOST_KERNEL_DIR override. Uncompressed
// files are used where they are; compressed modules are decompressed into
// a cache directory named after the override's path.
func kernelFromDir(ctx context.Context, dir, base string) (*Kernel, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	k, err := loadCachedKernel(abs)
	if err != nil {
		vmlinuz, mods, compressed, ferr := findKernelFiles(abs)
		if ferr != nil {
			return nil, fmt.Errorf("%s=%s: %w", HostKernelDirEnv, dir, ferr)
		}
		k = &Kernel{Dir: abs, Vmlinuz: vmlinuz, Modules: mods, CompressedModules: compressed}
	}
	if p := filepath.Join(abs, vmlinuxFile); fileExists(p) {
		if ok, _ := hasPVHNote(p); ok {
			k.Vmlinux = p
		}
	}
	if !k.CompressedModules && k.Vmlinux != "" {
		return k, nil
	}
	// Derived files go to a cache directory named after the override.
	sum := sha256.Sum256([]byte(abs))
	out := filepath.Join(base, "override-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	if k.CompressedModules {
		var plain []string
		for i, src := range k.Modules {
			dst := filepath.Join(out, KVMModules[i]+".ko")
			if !fileExists(dst) {
				if err := decompressModule(ctx, src, dst); err != nil {
					return nil, err
				}
			}
			plain = append(plain, dst)
		}
		k.Modules = plain
	}
	if k.Vmlinux == "" {
		k.Vmlinux = ensureVmlinux(ctx, k.Vmlinuz, out)
	}
	return k, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// collectKernel finds the kernel image and modules in an unpacked package
// at root and copies (decompressing where needed) them into out, in the
// cache layout.
func collectKernel(ctx context.Context, root, out string) (*Kernel, error) {
	vmlinuz, mods, compressed, err := findKernelFiles(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	k := &Kernel{Dir: out, Vmlinuz: filepath.Join(out, "vmlinuz"), CompressedModules: compressed}
	if err := os.Rename(vmlinuz, k.Vmlinuz); err != nil {
		return nil, err
	}
	for i, src := range mods {
		dst := filepath.Join(out, KVMModules[i]+".ko")
		if err := decompressModule(ctx, src, dst); err != nil {
			return nil, err
		}
		k.Modules = append(k.Modules, dst)
	}
	return k, nil
}

// moduleSuffixes are the file name endings a module may have, and the
// command line that decompresses each to stdout.
var moduleSuffixes = []struct {
	suffix string
	decomp []string
}{
	{".ko", nil},
	{".ko.xz", []string{"xz", "-dc"}},
	{".ko.zst", []string{"zstd", "-dcq"}},
	{".ko.gz", []string{"gzip", "-dc"}},
}

// findKernelFiles looks under root for a kernel image (vmlinuz, vmlinuz-*,
// bzImage, at the top or in boot/) and for the modules of KVMModules
// anywhere below.
func findKernelFiles(root string) (vmlinuz string, mods []string, compressed bool, err error) {
	for _, pat := range []string{"vmlinuz", "vmlinuz-*", "bzImage", "boot/vmlinuz-*", "boot/vmlinuz", "boot/bzImage"} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		if len(m) > 0 {
			sort.Strings(m)
			vmlinuz = m[len(m)-1]
			break
		}
	}
	if vmlinuz == "" {
		return "", nil, false, fmt.Errorf("no kernel image (vmlinuz, vmlinuz-*, bzImage, boot/vmlinuz-*) in %s", root)
	}
	found := map[string]string{}
	walkErr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, m := range KVMModules {
			for _, s := range moduleSuffixes {
				if d.Name() == m+s.suffix {
					if _, dup := found[m]; !dup {
						found[m] = p
					}
				}
			}
		}
		return nil
	})
	if walkErr != nil {
		return "", nil, false, walkErr
	}
	for _, m := range KVMModules {
		p, ok := found[m]
		if !ok {
			return "", nil, false, fmt.Errorf("module %s.ko (or .ko.xz/.ko.zst/.ko.gz) not found under %s", m, root)
		}
		if !strings.HasSuffix(p, ".ko") {
			compressed = true
		}
		mods = append(mods, p)
	}
	return vmlinuz, mods, compressed, nil
}

// decompressModule writes the uncompressed module src to dst, using the
// xz/zstd/gzip command line tools for compressed modules.
func decompressModule(ctx context.Context, src, dst string) error {
	var decomp []string
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(src, s.suffix) {
			decomp = s.decomp
		}
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".module-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if decomp == nil {
		in, err := os.Open(src)
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(f, in)
		in.Close()
		if err != nil {
			f.Close()
			return err
		}
	} else {
		if _, err := exec.LookPath(decomp[0]); err != nil {
			f.Close()
			return fmt.Errorf("module %s is compressed and %s is not installed: apt-get install %s", src, decomp[0], map[string]string{"xz": "xz-utils", "zstd": "zstd", "gzip": "gzip"}[decomp[0]])
		}
		cmd := exec.CommandContext(ctx, decomp[0], append(decomp[1:], src)...)
		var stderr bytes.Buffer
		cmd.Stdout = f
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			f.Close()
			return fmt.Errorf("command `%s` failed: %v\n%s", strings.Join(cmd.Args, " "), err, tail(stderr.String(), 2000))
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
