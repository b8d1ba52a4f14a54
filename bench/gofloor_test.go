package bench

import (
	"testing"

	"kvmlab/vmm/kvm"
)

// TestGoFloorVariants runs the Go floor on this machine's /dev/kvm in each
// way of entering the guest (the raw one through the vCPU descriptor it
// finds in /proc/self/fd): GoFloor itself fails unless its loop counted
// exactly the exits the guest made and ended at the guest's poweroff.
func TestGoFloorVariants(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("no usable /dev/kvm here (%v): the Go floor needs one", err)
	}
	sys.Close()
	for _, v := range []GoFloorVariant{GoFloorPlain, goFloorNoYield, goFloorRaw, goFloorPinned} {
		t.Run(string(v), func(t *testing.T) {
			d, err := GoFloor(500, v)
			if err != nil {
				t.Fatalf("GoFloor(500, %s): %v", v, err)
			}
			if d <= 0 {
				t.Errorf("GoFloor(500, %s) took %v", v, d)
			}
		})
	}
	if _, err := GoFloor(10, "bogus"); err == nil {
		t.Error("GoFloor accepted an unknown variant")
	}
}

// TestVCPUFDNotFound: without a vCPU in the process the search says so.
func TestVCPUFDNotFound(t *testing.T) {
	if fd, err := vcpuFD(4095); err == nil {
		t.Errorf("vcpuFD(4095) = %d, want an error", fd)
	}
}
