package probe

// Report is what the probe prints, as one JSON object on one line after the
// marker "KVMLAB-PROBE " (so a host can pick it out of a console). The same
// binary runs as a VM's guest program and as a container's workload; the
// fields are the facts a learner compares between the two.
type Report struct {
	// Where the probe runs: "vm" or "container" is for the host to
	// say; the probe reports only what it sees.
	Hostname      string  `json:"hostname"`
	KernelRelease string  `json:"kernel_release"` // uname -r
	KernelVersion string  `json:"kernel_version"` // uname -v (build number and date)
	UptimeSec     float64 `json:"uptime_sec"`     // /proc/uptime: the kernel's, not the process's
	BootID        string  `json:"boot_id"`        // /proc/sys/kernel/random/boot_id
	MonotonicNS   int64   `json:"monotonic_ns"`   // CLOCK_MONOTONIC when the probe started

	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`       // online CPUs the probe may run on
	Hypervisor bool   `json:"hypervisor"` // the CPUID "hypervisor" bit, from /proc/cpuinfo flags
	MemTotalKB uint64 `json:"mem_total_kb"`

	PID1        string   `json:"pid1"`         // /proc/1/comm
	PID         int      `json:"pid"`          // the probe's own PID
	Processes   int      `json:"processes"`    // PIDs visible in /proc
	ProcessList []string `json:"process_list"` // their comm names, at most 64
	Mounts      int      `json:"mounts"`       // lines of /proc/self/mountinfo
	MountList   []string `json:"mount_list"`   // "mountpoint fstype", at most 64
	Interfaces  []string `json:"interfaces"`   // network interfaces (/sys/class/net)
	Modules     int      `json:"modules"`      // loaded kernel modules (/proc/modules), -1 if unreadable
	Devices     int      `json:"devices"`      // entries in /dev
	Cgroup      string   `json:"cgroup"`       // /proc/self/cgroup
	// Dmesg says whether the kernel log could be read (syslog(2)), and
	// how many lines it had.
	DmesgReadable bool `json:"dmesg_readable"`
	DmesgLines    int  `json:"dmesg_lines"`
	// SysrqWritable says whether /proc/sysrq-trigger could be opened for
	// writing: the way to crash (or reboot) a kernel from user space.
	SysrqWritable bool `json:"sysrq_writable"`

	// Workload is the small fixed job the probe runs so both sides do
	// the same work (files written and read, processes started).
	Workload WorkloadResult `json:"workload"`
	Errors   []string       `json:"errors,omitempty"` // facts that could not be read
}

// WorkloadResult describes the probe's fixed workload and its duration.
type WorkloadResult struct {
	Files      int   `json:"files"`       // files created, written, read back and removed
	Bytes      int64 `json:"bytes"`       // bytes written (and read)
	Processes  int   `json:"processes"`   // child processes started
	DurationNS int64 `json:"duration_ns"` // wall time of the workload
}
