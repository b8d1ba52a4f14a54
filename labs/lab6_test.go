package labs

import (
	"encoding/json"
	"os"
	"testing"

	"kvmlab/compare"
	"kvmlab/emuhost"
)

// realRows are the rows of a real `kvmlab compare` run, recorded from
// tests/compare_test.go in the emulated AMD host. The grader is a pure
// function of the learner's claims and a report; the check that runs
// compare for real is graded in tests/labs456_test.go.
func realRows(t *testing.T) []compare.Row {
	t.Helper()
	b, err := os.ReadFile("testdata/compare-rows.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct{ Rows []compare.Row }
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Rows) == 0 {
		t.Fatalf("testdata/compare-rows.json: %v (%d rows)", err, len(rep.Rows))
	}
	return rep.Rows
}

func TestLab6Grade(t *testing.T) {
	l, err := Get(6)
	if err != nil {
		t.Fatal(err)
	}
	block := func(fact, vm, ctr, cause string) string {
		return "fact: " + fact + "\nvm: " + vm + "\ncontainer: " + ctr + "\ncause: " + cause + "\n\n"
	}
	bootID := block("same kernel instance as the host (boot id)", "no", "yes", "own-kernel")
	procs := block("processes visible (PID 1)", "28 (init)", "2 (exe)", "pid-namespace")
	tests := []struct {
		name  string
		facts string
		pass  bool
		hint  string
		line  string
	}{
		{name: "reference solution", facts: string(l.Solution()["facts.txt"]), pass: true, line: `fact "processes visible (PID 1)": right`},
		{name: "wrong solution", facts: string(l.Wrong()["facts.txt"]), hint: "copy the values", line: `cause "cgroup"`},
		{name: "starting point", facts: string(l.Files()["facts.txt"]), hint: "fill in the three facts"},
		{name: "not a row", facts: bootID + procs + block("the kernel", "mine", "shared", "own-kernel"), hint: "as the report's first column does"},
		{name: "aliases, a leading part and a process count off by two",
			facts: block("boot id", "no", "yes", "own-kernel") + block("processes", "30", "2", "pid-namespace") +
				block("kernel release", "6.1.192", "6.1.0-57-amd64", "own-kernel"), pass: true},
		{name: "network interfaces with the real values", facts: bootID + procs + block("network interfaces", "lo sit0", "lo", "net-namespace"), pass: true},
		{name: "a count far off", facts: bootID + block("processes visible (PID 1)", "60 (init)", "2 (exe)", "pid-namespace") + block("mounts", "9", "16", "mount-namespace"),
			hint: "copy the values", line: `the VM showed "28 (init)"`},
		{name: "a release that is not the VM's", facts: bootID + procs + block("kernel release", "6.1.19", "6.1.0-57-amd64", "own-kernel"), hint: "copy the values"},
		{name: "a row that does not differ", facts: bootID + procs + block("host kernel still up afterwards", "yes", "yes", "own-kernel"), hint: "where the two columns differ"},
		{name: "a cost, not isolation", facts: bootID + procs + block("memory used", "109.5 MiB", "9.7 MiB", "cgroup"), hint: "pick facts from the rows"},
		{name: "the same row twice", facts: bootID + procs + procs, hint: "three different facts"},
		{name: "an unknown cause", facts: bootID + procs + block("mounts visible", "9", "16", "chroot"), hint: "name the cause with one of"},
		{name: "a wrong cause", facts: bootID + procs + block("mounts visible", "9", "16", "pid-namespace"), hint: "namespaces(7)"},
		{name: "only two facts", facts: bootID + procs, hint: "three are needed"},
		{name: "not key: value", facts: "the kernel differs\n", hint: "four lines"},
	}
	rows := realRows(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := lab6Claims([]byte(tc.facts))
			var res Result
			if err != nil {
				// What checkLab6 answers for a file it cannot read.
				res = Result{Lines: []string{err.Error()}, Hint: "write each fact as four lines: fact:, vm:, container:, cause: (see README.md)"}
			} else {
				res = gradeLab6(claims, rows)
			}
			checkResult(t, res, tc.pass, tc.hint, tc.line)
		})
	}
}

// TestLab6Check runs the whole check, kvmlab compare included, where this
// machine can: as root on a /dev/kvm that boots Linux. Elsewhere the
// same check runs in tests/labs456_test.go inside the emulated host.
func TestLab6Check(t *testing.T) {
	if ok, why := emuhost.KVMUsable(); !ok || os.Geteuid() != 0 {
		t.Skipf("kvmlab compare needs root and a /dev/kvm that boots Linux (%s): tests/labs456_test.go runs this check in the emulated host", why)
	}
	bin := os.Getenv("KVMLAB_BIN")
	if bin == "" {
		t.Skip("KVMLAB_BIN is not set: the check needs a kvmlab binary")
	}
	l, _ := Get(6)
	gradeReferenceAndWrong(t, l, bin)
}
