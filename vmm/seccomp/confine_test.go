package seccomp_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kvmlab/guest/tiny"
	"kvmlab/vmm"
	"kvmlab/vmm/kvm"
	"kvmlab/vmm/seccomp"
)

// childEnv makes the test binary a confined VMM instead of a test run:
// TestMain sees it, builds and runs a tiny guest under the real filter, and
// then makes the call it names.
const childEnv = "KVMLAB_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(child(what))
	}
	os.Exit(m.Run())
}

// tinyGuest writes "Hi\n" to COM1 and powers off through ACPI PM1a_CNT
// (SLP_TYP=5, SLP_EN): port and power exits, the serial interrupt line
// (KVM_IRQ_LINE), the console writer goroutine, and the stop.
var tinyGuest = []byte{
	0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
	0xb0, 'H', 0xee, // mov al, 'H'; out dx, al
	0xb0, 'i', 0xee, // mov al, 'i'; out dx, al
	0xb0, '\n', 0xee, // mov al, '\n'; out dx, al
	0x66, 0xba, 0x04, 0x06, // mov dx, 0x604
	0x66, 0xb8, 0x00, 0x34, // mov ax, 0x3400
	0x66, 0xef, // out dx, ax
	0xf4, 0xeb, 0xfd, // hlt; jmp $-1
}

// child runs in the re-executed test binary. Exit status 3: no usable KVM.
func child(what string) int {
	sys, err := kvm.Open() // kept open to try KVM_CREATE_VM under the filter
	if err != nil {
		fmt.Println("no KVM:", err)
		return 3
	}
	m, err := vmm.New(vmm.Config{Kernel: tiny.ELF(tinyGuest), MemBytes: 64 << 20, CPUs: 1,
		Console: os.Stdout, Log: os.Stderr, Stats: true})
	if err != nil {
		fmt.Println("no KVM:", err)
		return 3
	}
	if err := vmm.SelfStatm.Open(); err != nil {
		fmt.Println(err)
		return 4
	}
	if _, err := m.KernelStats(); err != nil {
		fmt.Println("kernel stats before:", err)
	}
	if err := seccomp.Install(seccomp.VMM(), seccomp.Options{}); err != nil {
		fmt.Println("install:", err)
		return 4
	}
	// New threads under the filter: goroutines locked to their threads
	// while they wait make the runtime start more (clone, and with cgo
	// glibc's clone3, rseq, set_robust_list, mprotect), with signals
	// blocked, where a refused call would kill without a word.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-release
		}()
	}
	out := m.Run()
	close(release)
	wg.Wait()
	fmt.Printf("guest stopped: %s\n", out.Reason)
	// What --stats does after the run: statistics, RSS, residency.
	if _, err := m.KernelStats(); err != nil {
		fmt.Println("kernel stats:", err)
		return 5
	}
	if st := m.Stats(); st.RSS == 0 || st.GuestResident == 0 {
		fmt.Printf("stats: RSS %d, guest resident %d\n", st.RSS, st.GuestResident)
		return 5
	}
	m.Close()
	fmt.Println("confined VMM done")
	os.Stdout.Sync()
	switch what {
	case "none":
		return 0
	case "socket":
		_, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	case "execve":
		err = syscall.Exec("/bin/true", []string{"true"}, nil)
	case "openat":
		_, err = os.Open("/etc/hostname")
	case "fork":
		// clone(SIGCHLD): fork, with no CLONE_THREAD. Raw, so that
		// nothing else is called first (ForkExec makes a pipe).
		if r, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0); e != 0 {
			err = e
		} else if r == 0 {
			os.Exit(0) // the new process, had it been made
		}
	case "x32":
		// read(2) through the x32 entry (__X32_SYSCALL_BIT): a number
		// with no name, which the filter sees under AUDIT_ARCH_X86_64.
		_, _, e := unix.RawSyscall(0x40000000, 0, 0, 0)
		err = e
	case "create-vm":
		_, err = sys.CreateVM()
	}
	fmt.Printf("the forbidden call %s returned (%v)\n", what, err)
	return 0
}

// TestConfinedVMM re-runs this test binary as a VMM that builds a tiny
// guest on /dev/kvm, installs the real filter, runs the guest to its
// poweroff and reads the statistics, then makes one forbidden call. The
// guest must run; the forbidden call must end the process with the
// handler's one line and status 159, and never return.
func TestConfinedVMM(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what     string
		wantCall string // in the message; "" for no message
	}{
		{"none", ""},
		{"socket", "socket (41) (arguments 0x2, 0x1, ...)"},
		{"execve", "execve (59)"},
		{"openat", "openat (257)"},
		{"fork", "clone (56) (arguments 0x11, 0x0, ...)"},
		{"create-vm", ", 0xae01, ...)"}, // KVM_CREATE_VM's request
		{"x32", "system call 0x40000000 (arguments 0x0, 0x0, ...)"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+tc.what)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code == 3 {
				t.Skipf("this host cannot run the tiny guest: %s", stdout.String())
			}
			out, msg := stdout.String(), stderr.String()
			for _, want := range []string{"Hi\n", "guest stopped: poweroff\n", "confined VMM done\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s\nstderr:\n%s", want, out, msg)
				}
			}
			if tc.what == "openat" && seccomp.CgoBuild {
				// glibc's own opens make the cgo build refuse
				// openat with EACCES rather than trap (VMMRules).
				if want := "the forbidden call openat returned (open /etc/hostname: permission denied)"; code != 0 || !strings.Contains(out, want) {
					t.Errorf("cgo build: status %d, stdout %q; want 0 and %q", code, out, want)
				}
				return
			}
			if strings.Contains(out, "returned") {
				t.Errorf("the forbidden call came back:\n%s", out)
			}
			if tc.wantCall == "" {
				if code != 0 || msg != "" {
					t.Errorf("status %d, stderr %q; want 0 and nothing", code, msg)
				}
				return
			}
			if code != seccomp.ExitStatus {
				t.Errorf("status %d, want %d\nstderr:\n%s", code, seccomp.ExitStatus, msg)
			}
			want := "kvmlab: seccomp: the VMM made a system call its filter forbids: "
			if !strings.Contains(msg, want) || !strings.Contains(msg, tc.wantCall) || !strings.Contains(msg, "Rerun with --seccomp=false") {
				t.Errorf("stderr lacks %q ... %q:\n%s", want, tc.wantCall, msg)
			}
			if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "SIGSYS: bad system call") {
				t.Errorf("stderr holds a Go crash report:\n%s", msg)
			}
			if lines := strings.Count(strings.TrimSpace(msg), "\n") + 1; lines != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", lines, msg)
			}
		})
	}
}
