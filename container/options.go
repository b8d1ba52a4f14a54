package container

// What a user asks for, checked. `kvmlab container` takes limits, an ID
// range, a hostname and a root as its flags; Options.Config turns them into
// a Config, refusing in one line (a cli.UsageError naming the flag) what
// the kernel would refuse later, or what would leave the container unable
// to start: too little memory or too few tasks for its init, a CPU quota
// below the kernel's smallest, a hostname sethostname(2) does not take, an
// ID range that maps host root or runs past the largest ID.

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"kvmlab/internal/cli"
)

// About says what `kvmlab container` does, for its --help: the runtime as
// its user sees it.
const About = `Run COMMAND in a container: new PID, mount, UTS, IPC, network and cgroup
namespaces, the guest's u-root file system as its root, and cgroup limits
(by default a memory and a task limit, below). The host's kernel runs it;
compare with 'kvmlab run', where the guest has its own. COMMAND runs as the
container's root with a few capabilities only (chown, dac_override, fowner,
fsetid, kill, setgid, setuid, net_bind_service) and no_new_privs.

Run it as root, or as any user: without root (or with --userns) the
container's root is your user, in a user namespace, and there is no cgroup
and so no limits. kvmlab exits with COMMAND's status (128+N when signal N
killed it). Each start removes what SIGKILLed kvmlab processes left behind.

Examples:
  kvmlab container -- /bin/sh
  kvmlab container --mem 32M --verbose -- sh -c 'head -c 100000000 /dev/zero | sort'
  kvmlab container --hostname box -- hostname
  kvmlab container --userns-range 1000000:65536 -- cat /proc/self/uid_map
`

// minMemory is the smallest memory limit: the container's init (this
// binary, a Go program) lives in the cgroup too and needs a few MiB.
const minMemory = 8 << 20

// minPids is the smallest task limit: pids.max counts threads, the
// container's init (a Go program) has about five, and so does each of
// u-root's programs; a Go program that cannot create a thread it needs
// dies.
const minPids = 16

// Options are a container as the user asked for it. Limits left zero (not
// given) are the runtime's defaults, which it can skip, with a note, where
// there is no cgroup; limits given must apply.
type Options struct {
	Args []string
	// Memory is the memory limit in bytes (MemoryUnlimited for none, 0
	// when not given); MemoryText is how the user wrote it.
	Memory     uint64
	MemoryText string
	CPUs       string // a number of CPUs, e.g. 0.5; "" for no limit
	Pids       int    // 0 for none, when PidsSet
	PidsSet    bool
	Hostname   string
	// UserNS asks for a user namespace (with root: from root's range in
	// /etc/subuid); UserNSRange names the range, as FIRST:COUNT.
	UserNS      bool
	UserNSRange string
	Initrd      string // "" for DefaultInitrd, unless Rootfs is given
	Rootfs      string
	Runc        bool // run it with runc
}

// Config checks o and turns it into a Config.
func (o Options) Config() (Config, error) {
	cfg := Config{Args: o.Args, Hostname: o.Hostname}
	switch {
	case o.Memory == 0 || o.Memory == MemoryUnlimited:
	case o.Memory < minMemory:
		return cfg, cli.Usagef("--mem %s: too little for the container's init to run: use at least %dM", o.MemoryText, minMemory>>20)
	}
	cfg.Limits.Memory = o.Memory
	if o.CPUs != "" {
		c, err := strconv.ParseFloat(o.CPUs, 64)
		switch {
		case err != nil || math.IsNaN(c) || math.IsInf(c, 0):
			return cfg, cli.Usagef("--cpus %s: not a number: use e.g. --cpus 1 or --cpus 0.5", o.CPUs)
		case c < 0.01:
			return cfg, cli.Usagef("--cpus %s: below the kernel's smallest quota: use at least 0.01", o.CPUs)
		case c > float64(runtime.NumCPU()):
			return cfg, cli.Usagef("--cpus %s: this host has %d CPUs: use at most %d", o.CPUs, runtime.NumCPU(), runtime.NumCPU())
		}
		cfg.Limits.CPUs = c
	}
	if o.Pids < 0 {
		return cfg, cli.Usagef("--pids %d: must be positive (0 means no limit)", o.Pids)
	}
	if o.Pids > 0 && o.Pids < minPids {
		return cfg, cli.Usagef("--pids %d: too few for the container's init and one program, whose threads count too: use at least %d", o.Pids, minPids)
	}
	if o.PidsSet {
		cfg.Limits.Pids = o.Pids
		if o.Pids == 0 {
			cfg.Limits.Pids = PidsUnlimited
		}
	}
	if o.Runc && (o.UserNS || o.UserNSRange != "") {
		return cfg, cli.Usagef("container: --userns works with kvmlab's runtime, not --runc: drop one of them")
	}
	r, err := o.IDRange()
	if err != nil {
		return cfg, err
	}
	cfg.UserNS = r
	if !validHostname(o.Hostname) {
		return cfg, cli.Usagef("--hostname %q: use 1 to 64 letters, digits, dots and dashes", o.Hostname)
	}
	if err := o.root(&cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// root sets the container's root: Rootfs, a directory used as it is, or
// Initrd (by default the guest's), an archive.
func (o Options) root(cfg *Config) error {
	switch {
	case o.Initrd != "" && o.Rootfs != "":
		return cli.Usagef("--initrd and --rootfs both given: use one")
	case o.Rootfs != "":
		st, err := os.Stat(o.Rootfs)
		if err != nil || !st.IsDir() {
			return cli.Usagef("--rootfs %s: not a directory: name an unpacked root file system", o.Rootfs)
		}
		cfg.Rootfs = o.Rootfs
		return nil
	}
	initrd, flagName := o.Initrd, "--initrd"
	if initrd == "" {
		initrd, flagName = DefaultInitrd(), "the default initramfs"
	}
	st, err := os.Stat(initrd)
	switch {
	case errors.Is(err, fs.ErrNotExist) && o.Initrd == "":
		return cli.Usagef("no guest initramfs at %s: run 'make guest' to build it, or pass --initrd CPIO or --rootfs DIR", initrd)
	case errors.Is(err, fs.ErrNotExist):
		return cli.Usagef("%s %s: no such file: check the path", flagName, initrd)
	case err != nil:
		return cli.Usagef("%s %s: %v", flagName, initrd, errors.Unwrap(err))
	case st.IsDir():
		return cli.Usagef("%s %s: is a directory: use --rootfs for an unpacked root", flagName, initrd)
	}
	cfg.Initrd = initrd
	return nil
}

// IDRange turns UserNS and UserNSRange into the user namespace's ID map,
// nil for none.
func (o Options) IDRange() (*IDRange, error) {
	root := os.Geteuid() == 0
	switch {
	case o.UserNSRange != "":
		a, n, ok := strings.Cut(o.UserNSRange, ":")
		first, err1 := strconv.ParseUint(a, 10, 32)
		count, err2 := strconv.ParseUint(n, 10, 32)
		switch {
		case !ok || err1 != nil || err2 != nil || count == 0:
			return nil, cli.Usagef("--userns-range %s: want FIRST:COUNT, two numbers, e.g. --userns-range 1000000:65536", o.UserNSRange)
		case !root:
			return nil, cli.Usagef("--userns-range: mapping a range of IDs needs root; without root, kvmlab maps your own user (--userns)")
		case first == 0:
			return nil, cli.Usagef("--userns-range %s: host ID 0 is root: start the range at unused IDs, e.g. 1000000:65536", o.UserNSRange)
		case first+count > 1<<32-1:
			return nil, cli.Usagef("--userns-range %s: goes past the largest ID (4294967294)", o.UserNSRange)
		}
		return &IDRange{HostUID: uint32(first), HostGID: uint32(first), Size: uint32(count)}, nil
	case o.UserNS && root:
		r, err := SubordinateRange("root", 0)
		if err != nil {
			return nil, cli.Usagef("--userns as root: %v: add a line such as root:1000000:65536 to /etc/subuid and /etc/subgid, or pass --userns-range 1000000:65536", err)
		}
		return &r, nil
	case o.UserNS:
		r := CallerRange()
		return &r, nil
	}
	return nil, nil
}

// validHostname accepts what sethostname(2) takes (at most 64 bytes) and
// the resolver expects: letters, digits, dots and dashes.
func validHostname(h string) bool {
	if h == "" || len(h) > 64 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}
