// Command probe runs inside the container package's test containers and
// prints what it sees there, one "key=value" line per fact. The tests build
// it statically (CGO_ENABLED=0) and copy it into the root as /probe.
//
//	probe pids          its PID, its parent's, and every PID in /proc
//	probe hostname      its hostname
//	probe netdevs       the network devices in /proc/net/dev, and lo's flags
//	probe cgroup        /proc/self/cgroup
//	probe mounts        the mount points in /proc/self/mountinfo
//	probe alloc MIB     allocates and touches MIB MiB
//	probe fork N        starts N copies of "probe sleep 30", counts failures
//	probe spin MS       burns CPU for MS ms of wall time, prints CPU time used
//	probe sleep S       sleeps S seconds
//	probe kill-self     sends itself SIGTERM
//	probe status        its capability sets, no_new_privs, user and group
//	                    IDs (from /proc/self/status), its uid_map and gid_map
//	probe umount PATH   tries to unmount PATH, prints umount=ok or the error
//	probe openw PATH... opens each PATH for writing and closes it again,
//	                    without writing; prints PATH=ok or PATH=the error
package main

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "probe: which probe?")
		os.Exit(2)
	}
	arg := func() int {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(2)
		}
		return n
	}
	switch os.Args[1] {
	case "pids":
		ents, _ := os.ReadDir("/proc")
		var pids []int
		for _, e := range ents {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, n)
			}
		}
		sort.Ints(pids)
		fmt.Printf("self=%d\nppid=%d\nprocs=%s\n", os.Getpid(), os.Getppid(), strings.Trim(fmt.Sprint(pids), "[]"))
	case "hostname":
		h, _ := os.Hostname()
		fmt.Printf("hostname=%s\n", h)
	case "netdevs":
		b, _ := os.ReadFile("/proc/net/dev")
		var devs []string
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, ok := strings.Cut(line, ":"); ok {
				devs = append(devs, strings.TrimSpace(name))
			}
		}
		flags, _ := os.ReadFile("/sys/class/net/lo/flags")
		fmt.Printf("devs=%s\nloflags=%s\n", strings.Join(devs, ","), strings.TrimSpace(string(flags)))
	case "cgroup":
		b, _ := os.ReadFile("/proc/self/cgroup")
		fmt.Print(string(b))
	case "mounts":
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 {
				fmt.Printf("mount=%s\n", f[4])
			}
		}
	case "alloc":
		mib := arg()
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Printf("allocated=%d\n", mib)
	case "fork":
		n, ok, failed := arg(), 0, 0
		var first error
		for range n {
			c := exec.Command("/probe", "sleep", "30")
			c.Env = []string{"GOMAXPROCS=1"}
			if err := c.Start(); err != nil {
				failed++
				if first == nil {
					first = err
				}
				continue
			}
			ok++
		}
		fmt.Printf("forked=%d\nfailed=%d\nerror=%v\n", ok, failed, first)
	case "spin":
		d := time.Duration(arg()) * time.Millisecond
		start := time.Now()
		for time.Since(start) < d {
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("wall_ms=%d\ncpu_ms=%d\n", time.Since(start).Milliseconds(), cpu.Milliseconds())
	case "sleep":
		time.Sleep(time.Duration(arg()) * time.Second)
	case "openw":
		// O_WRONLY alone: no O_CREAT, no O_TRUNC, and no write. Opening
		// a /proc file has no effect; only writing would.
		for _, p := range os.Args[2:] {
			fd, err := syscall.Open(p, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				fmt.Printf("%s=%v\n", p, err)
				continue
			}
			syscall.Close(fd)
			fmt.Printf("%s=ok\n", p)
		}
	case "status":
		b, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (strings.HasPrefix(k, "Cap") || k == "NoNewPrivs" || k == "Uid" || k == "Gid") {
				fmt.Printf("%s=%s\n", k, strings.Join(strings.Fields(v), " "))
			}
		}
		for _, f := range []string{"uid_map", "gid_map", "setgroups"} {
			b, _ := os.ReadFile("/proc/self/" + f)
			fmt.Printf("%s=%s\n", f, strings.Join(strings.Fields(string(b)), " "))
		}
	case "umount":
		if err := syscall.Unmount(os.Args[2], syscall.MNT_DETACH); err != nil {
			fmt.Printf("umount=%v\n", err)
		} else {
			fmt.Println("umount=ok")
		}
	case "kill-self":
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(10 * time.Second)
	default:
		fmt.Fprintln(os.Stderr, "probe: unknown probe", os.Args[1])
		os.Exit(2)
	}
}
