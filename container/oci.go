package container

// The same container through runc, the reference implementation of the
// Open Container Initiative's runtime specification
// (https://github.com/opencontainers/runtime-spec). An OCI "bundle" is a
// directory holding config.json, which says what to run and how to isolate
// it, and the root file system it names. Docker, containerd and Podman all
// end up writing one and calling runc (or a runtime like it): this is the
// layer our package reimplements, so running the same workload both ways
// shows what a production runtime adds and what it costs.
//
// The config below is the minimum that matches what Start does: the same
// namespaces, mounts, read-only /proc paths, limits (defaults included),
// capabilities (caps.go) and no_new_privs. A full config from `runc spec`
// also masks files in /proc, makes more of /proc read-only and lists
// device cgroup rules; runc applies its own defaults for what is left out
// (docs/container.md lists what runc does beyond this runtime).
//
// Differences worth seeing: runc's init execs the workload, so the workload
// is PID 1 (with PID 1's signal rules; see init.go), and runc removes its
// cgroup before exiting, so the memory figures of Result are not available
// here.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The parts of the runtime spec's config.json that we set.
type (
	ociSpec struct {
		Version  string     `json:"ociVersion"`
		Process  ociProcess `json:"process"`
		Root     ociRoot    `json:"root"`
		Hostname string     `json:"hostname"`
		Mounts   []ociMount `json:"mounts"`
		Linux    ociLinux   `json:"linux"`
	}
	ociProcess struct {
		Terminal        bool     `json:"terminal"`
		User            ociUser  `json:"user"`
		Args            []string `json:"args"`
		Env             []string `json:"env"`
		Cwd             string   `json:"cwd"`
		Capabilities    ociCaps  `json:"capabilities"`
		NoNewPrivileges bool     `json:"noNewPrivileges"`
	}
	ociUser struct {
		UID uint32 `json:"uid"`
		GID uint32 `json:"gid"`
	}
	ociCaps struct {
		Bounding  []string `json:"bounding"`
		Effective []string `json:"effective"`
		Permitted []string `json:"permitted"`
	}
	ociRoot struct {
		Path     string `json:"path"`
		Readonly bool   `json:"readonly"`
	}
	ociMount struct {
		Destination string   `json:"destination"`
		Type        string   `json:"type"`
		Source      string   `json:"source"`
		Options     []string `json:"options,omitempty"`
	}
	ociLinux struct {
		Namespaces    []ociNamespace `json:"namespaces"`
		ReadonlyPaths []string       `json:"readonlyPaths,omitempty"`
		Resources     *ociResources  `json:"resources,omitempty"`
	}
	ociNamespace struct {
		Type string `json:"type"`
	}
	ociResources struct {
		Memory *ociMemory `json:"memory,omitempty"`
		CPU    *ociCPU    `json:"cpu,omitempty"`
		Pids   *ociPids   `json:"pids,omitempty"`
	}
	ociMemory struct {
		Limit int64 `json:"limit"`
		Swap  int64 `json:"swap"` // memory plus swap, as v1's memsw
	}
	ociCPU struct {
		Quota  int64  `json:"quota"`
		Period uint64 `json:"period"`
	}
	ociPids struct {
		Limit int64 `json:"limit"`
	}
)

// ociConfig translates cfg into a runtime spec config for the root
// directory rootfs.
func ociConfig(cfg Config, rootfs string) ociSpec {
	host := cfg.Hostname
	if host == "" {
		host = DefaultHostname
	}
	spec := ociSpec{
		Version: "1.0.2",
		Process: ociProcess{
			Args: cfg.Args,
			Env:  containerEnv(host),
			Cwd:  "/",
			// Inheritable and ambient are left out: runc makes them
			// empty, as Init does.
			Capabilities:    ociCaps{Bounding: WorkloadCapabilities(), Effective: WorkloadCapabilities(), Permitted: WorkloadCapabilities()},
			NoNewPrivileges: true,
		},
		Root:     ociRoot{Path: rootfs},
		Hostname: host,
		// The same file systems as Init mounts. With a tmpfs on /dev,
		// runc creates null, zero, full, random, urandom and tty itself.
		Mounts: []ociMount{
			{"/proc", "proc", "proc", []string{"nosuid", "nodev", "noexec"}},
			{"/dev", "tmpfs", "tmpfs", []string{"nosuid", "noexec", "mode=755", "size=1m"}},
			{"/dev/pts", "devpts", "devpts", []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{"/sys", "sysfs", "sysfs", []string{"nosuid", "nodev", "noexec", "ro"}},
			{"/tmp", "tmpfs", "tmpfs", []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: ociLinux{
			Namespaces: []ociNamespace{{"pid"}, {"mount"}, {"uts"}, {"ipc"}, {"network"}, {"cgroup"}},
			// The same /proc paths our init makes read-only (init.go).
			ReadonlyPaths: ociReadonlyPaths(),
		},
	}
	l := cfg.Limits.Effective()
	if l != (Limits{}) {
		r := &ociResources{}
		if l.Memory > 0 {
			r.Memory = &ociMemory{Limit: int64(l.Memory), Swap: int64(l.Memory)}
		}
		if l.CPUs > 0 {
			r.CPU = &ociCPU{Quota: int64(math.Round(l.CPUs * cfsPeriod)), Period: cfsPeriod}
		}
		if l.Pids > 0 {
			r.Pids = &ociPids{Limit: int64(l.Pids)}
		}
		spec.Linux.Resources = r
	}
	return spec
}

// WriteBundle writes an OCI bundle for cfg into dir: config.json, naming
// rootfs (an absolute path) as the root file system.
func WriteBundle(dir, rootfs string, cfg Config) error {
	if len(cfg.Args) == 0 {
		return fmt.Errorf("oci: no command to run")
	}
	b, err := json.MarshalIndent(ociConfig(cfg, rootfs), "", "\t")
	if err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("oci: %w", err)
	}
	return nil
}

// ErrNoRunc means runc is not installed (Debian: apt-get install runc).
var ErrNoRunc = errors.New("runc not found in PATH")

// RunRunc runs cfg with `runc run`: the root is prepared as for Start, the
// bundle written to a temporary directory, and both removed afterwards.
// Cancelling ctx kills the container through `runc kill`. Result has the
// exit status (runc reports a signal's death as 128+N, so Signal is derived
// from that) and the times; runc managed the cgroup, so there are no
// memory figures.
func RunRunc(ctx context.Context, cfg Config) (res Result, err error) {
	start := time.Now()
	runc, err := exec.LookPath("runc")
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrNoRunc, err)
	}
	if len(cfg.Args) == 0 || cfg.Args[0] == "" {
		return res, fmt.Errorf("%w: no command to run", ErrSetup)
	}
	if cfg.CountSyscalls {
		// The tracer is our init (syscalls.go); runc has its own.
		return res, fmt.Errorf("%w: counting system calls needs kvmlab's runtime, not runc", ErrSetup)
	}
	if err := cfg.Limits.validate(); err != nil {
		return res, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	if cfg.UserNS != nil {
		return res, fmt.Errorf("%w: a user namespace is offered by kvmlab's runtime, not with runc", ErrSetup)
	}
	// The root, the bundle and runc's container share one name, owned
	// by this process, so that a later start can sweep them if we die.
	cgRoot := cfg.CgroupRoot
	if cgRoot == "" {
		cgRoot = DefaultCgroupRoot
	}
	id, notes, err := startName(cgRoot)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	rootfs, tempRoot, unpack, err := prepareRoot(cfg, id)
	if tempRoot {
		defer func() { err = errors.Join(err, removeRoot(rootfs)) }()
	}
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	bundle := filepath.Join(os.TempDir(), bundleName(id))
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return res, err
	}
	defer os.RemoveAll(bundle)
	// As Init does (see startWorkload), a bare command name becomes its
	// path in the root, for u-root's busybox.
	if !strings.Contains(cfg.Args[0], "/") {
		cfg.Args = append([]string{lookInRoot(rootfs, cfg.Args[0])}, cfg.Args[1:]...)
	}
	if err := WriteBundle(bundle, rootfs, cfg); err != nil {
		return res, err
	}
	args := []string{"run", "--bundle", bundle}
	if rootIsInitramfs() {
		// pivot_root(2) cannot move the initial root file system away
		// (see changeRoot); runc then needs its MS_MOVE fallback too.
		args = append(args, "--no-pivot")
	}
	cmd := exec.CommandContext(ctx, runc, append(args, id)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orStd(cfg)
	// Killing runc itself would leave the container running: ask runc
	// to kill the container instead, and runc run then returns.
	cmd.Cancel = func() error { return exec.Command(runc, "kill", id, "KILL").Run() }
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	res = Result{Unpack: unpack, Wall: time.Since(start), Cgroup: CgroupReport{Version: "runc"}, Notes: notes}
	t := time.Now()
	// runc run deletes the container when it ends; this is for a runc
	// that was itself killed.
	_ = exec.Command(runc, "delete", "--force", id).Run()
	res.Teardown = time.Since(t)
	var ee *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &ee) && ee.Exited():
		res.ExitCode = ee.ExitCode()
		if res.ExitCode > 128 && res.ExitCode < 128+65 {
			res.Signal = syscall.Signal(res.ExitCode - 128)
		}
	default:
		return res, fmt.Errorf("runc run: %w", runErr)
	}
	return res, nil
}

// lookInRoot finds name in the container's PATH under rootfs, from the
// host, and returns its path inside the container, or name itself when it
// is not found (runc then reports that).
func lookInRoot(rootfs, name string) string {
	for _, dir := range filepath.SplitList(containerPath) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(filepath.Join(rootfs, p)); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return name
}

// rootIsInitramfs reports whether this process's root is the kernel's
// initial root file system (type "rootfs", unpacked from an initramfs), as
// inside the emulated host.
func rootIsInitramfs() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		// ID parent major:minor root mountpoint options... - fstype source
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				return f[i+1] == "rootfs"
			}
		}
	}
	return false
}

// ociReadonlyPaths names readOnlyProc as absolute paths for config.json.
func ociReadonlyPaths() []string {
	var p []string
	for _, n := range readOnlyProc {
		p = append(p, "/proc/"+n)
	}
	return p
}
