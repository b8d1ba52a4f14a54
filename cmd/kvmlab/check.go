package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"kvmlab/vmm/kvm"
)

func nestedParam() string {
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		b, err := os.ReadFile("/sys/module/" + m + "/parameters/nested")
		if err == nil {
			v := strings.TrimSpace(string(b))
			on := v == "1" || v == "Y"
			return fmt.Sprintf("%s nested=%s (%s)", m, v, map[bool]string{true: "this host can run VMs inside its guests", false: "guests of this host cannot run KVM"}[on])
		}
	}
	return "no kvm_intel/kvm_amd module loaded"
}

func cmdCheck(args []string) error {
	fset := flag.NewFlagSet("check", flag.ContinueOnError)
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), "Usage: kvmlab check\n\nReport whether this host can run kvmlab guests, and what to do if it cannot.\nExit status 0 when it can.\n")
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError{2}
	}
	ok := true
	report := func(good bool, what, detail string) {
		mark := "ok  "
		if !good {
			mark = "FAIL"
			ok = false
		}
		fmt.Printf("[%s] %-22s %s\n", mark, what, detail)
	}
	info := func(what, detail string) { fmt.Printf("[info] %-22s %s\n", what, detail) }

	be := kvm.HostBackend()
	if be.Extension == "" {
		report(false, "CPU virtualisation", be.Vendor+": no vmx or svm flag: enable VT-x/AMD-V in the firmware, or nested virtualisation on the VM host")
	} else {
		report(true, "CPU virtualisation", be.Vendor+", "+be.Extension)
	}
	if be.PVM {
		info("kvm_pvm loaded", "a software KVM without VT-x/AMD-V: it answers the KVM API but cannot run an unmodified Linux guest; 'make run' and 'make test' use the emulated host instead")
	}
	if be.Hypervisor {
		info("running in a VM", "yes: kvmlab guests will be nested; "+nestedParam())
	} else {
		info("running in a VM", "no (bare metal); "+nestedParam())
	}
	st, err := os.Stat(kvm.DevicePath)
	if err != nil {
		report(false, kvm.DevicePath, "missing: load kvm_intel or kvm_amd (modprobe), or boot guests in the emulated host: 'make run' / 'make test' do that automatically")
		return finishCheck(ok)
	}
	report(true, kvm.DevicePath, fmt.Sprintf("present (%v)", st.Mode()))
	sys, err := kvm.Open()
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrPermission):
			report(false, "access", "permission denied: sudo usermod -aG kvm $USER (then log in again), or run as root")
		case errors.Is(err, kvm.ErrAPIVersion):
			report(false, "KVM API version", err.Error())
		default:
			report(false, "open", err.Error())
		}
		return finishCheck(ok)
	}
	defer sys.Close()
	report(true, "KVM API version", fmt.Sprintf("%d", kvm.APIVersion))
	for _, c := range kvm.Required {
		n := sys.Check(c)
		report(n > 0, c.String(), map[bool]string{true: "supported", false: "missing: kvmlab needs it; use a newer host kernel"}[n > 0])
	}
	for _, c := range []kvm.Cap{kvm.CapIRQFD, kvm.CapIOEventFD, kvm.CapSetGuestDebug, kvm.CapBinaryStatsFD, kvm.CapTSCDeadlineTimer} {
		info(c.String(), map[bool]string{true: "supported", false: "not supported (optional)"}[sys.Check(c) > 0])
	}
	info("max vCPUs per VM", fmt.Sprintf("%d", sys.MaxVCPUs()))
	if cpuid, err := sys.SupportedCPUID(); err == nil {
		for _, e := range cpuid {
			if e.Function == 0x4000_0001 {
				info("kvm-clock for guests", map[bool]string{true: "advertised (KVM_FEATURE_CLOCKSOURCE2)", false: "not advertised"}[e.EAX&(1<<3) != 0])
			}
		}
	}
	return finishCheck(ok)
}

func finishCheck(ok bool) error {
	if ok {
		fmt.Println("This host can run kvmlab guests: try 'kvmlab run'.")
		return nil
	}
	fmt.Println("This host cannot run kvmlab guests directly; see the FAIL lines above.")
	return exitError{1}
}
