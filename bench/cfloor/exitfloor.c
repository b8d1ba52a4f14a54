/*
 * exitfloor: the floor of a user-space VM exit, for `kvmlab bench`.
 *
 * The least a VMM can do per exit: one ioctl(KVM_RUN), one look at
 * kvm_run->exit_reason, and straight back into the guest. The guest is the
 * one kvmlab runs for the same benchmark (tiny.PortLoopCode, package guest/tiny), byte for
 * byte: 64-bit code at 0x1000 that executes `out 0x80, al` N times, so
 * every iteration is one KVM_EXIT_IO, and then writes the poweroff value
 * to port 0x604 (kvmlab's ACPI PM1a control register), which here just
 * ends the loop. It runs in long
 * mode with paging, as kvmlab starts it (kvmlab enters an ELF kernel
 * that way): with nested paging, every guest TLB miss walks the guest's
 * page tables through the host's, and a real-mode guest, which has no page
 * tables, would make the floor's exits cheaper for a reason that has
 * nothing to do with the loop.
 *
 * The VM has the in-kernel devices kvmlab's has (KVM_CREATE_IRQCHIP: PIC,
 * I/O APIC and local APICs; KVM_CREATE_PIT2), because they add work to
 * every KVM_RUN: KVM checks the local APIC for a pending interrupt before
 * each entry. Without them the floor would be a cheaper VM, not a cheaper
 * loop. (With an in-kernel local APIC, HLT no longer exits to user space,
 * hence a port write to end on.) Its vCPU gets the CPUID KVM supports,
 * as kvmlab's does: the features a guest may use decide how much register
 * state KVM saves and restores around each exit to user space (XSAVE
 * components), and a vCPU with the default, nearly empty CPUID would
 * spare the floor part of that.
 *
 * usage: exitfloor N   prints "exitfloor: N exits in NANOSECONDS ns"
 * The time covers the KVM_RUN loop only (VM set-up excluded).
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: exitfloor N\n");
		return 2;
	}
	uint32_t n = (uint32_t)strtoul(argv[1], NULL, 0);
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	/*
	 * kvmlab's Intel-only set-up, at its addresses (vmm/x86/layout.go):
	 * VT-x's real-mode TSS and identity-mapped page table, which KVM uses
	 * while the guest runs without paging on a VT-x without unrestricted
	 * guest; the identity map must come before the vCPU. AMD ignores
	 * both. Without them the floor would be a different VM on such an
	 * Intel host. No test runs this on VT-x: `kvmlab bench --emulated-host
	 * --emulated-cpu intel` does (BENCHMARKS.md, 2026-12-04);
	 * TestExitFloorVTxSetUp checks the addresses against kvmlab's.
	 */
	uint64_t idmap = 0xfeffc000;
	if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		die("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfeffd000UL) < 0)
		die("KVM_SET_TSS_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
		die("KVM_CREATE_PIT2");
	size_t memsz = 0x10000;
	uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	/* mov ecx, n; 1: out 0x80, al; dec ecx; jnz 1b;
	 * mov dx, 0x604; mov ax, 0x3400; out dx, ax; 2: hlt; jmp 2b (64-bit code) */
	uint8_t code[] = {0xb9, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >> 24,
			  0xe6, 0x80, 0xff, 0xc9, 0x75, 0xfa,
			  0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef,
			  0xf4, 0xeb, 0xfd};
	memcpy(mem + 0x1000, code, sizeof code);
	/* GDT at 0x500: null, 64-bit code (selector 8), data (selector 0x10). */
	uint64_t gdt[] = {0, 0x00af9a000000ffffULL, 0x00cf92000000ffffULL};
	memcpy(mem + 0x500, gdt, sizeof gdt);
	/* Identity map of the first 2 MiB: PML4 at 0x2000 -> PDPT at 0x3000 ->
	 * PD at 0x4000, whose first entry is one 2 MiB page (present, writable,
	 * PS). */
	uint64_t pml4e = 0x3000 | 3, pdpte = 0x4000 | 3, pde = 0x0 | 0x83;
	memcpy(mem + 0x2000, &pml4e, 8);
	memcpy(mem + 0x3000, &pdpte, 8);
	memcpy(mem + 0x4000, &pde, 8);
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (uintptr_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	int nent = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + nent * sizeof cpuid->entries[0]);
	if (!cpuid)
		die("calloc");
	cpuid->nent = nent;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0)
		die("KVM_SET_CPUID2");
	int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 0xb, .present = 1,
				 .s = 1, .l = 1, .g = 1};
	struct kvm_segment ds = {.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 0x3, .present = 1,
				 .s = 1, .db = 1, .g = 1};
	sregs.cs = cs;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
	sregs.gdt.base = 0x500;
	sregs.gdt.limit = sizeof gdt - 1;
	sregs.cr0 = 0x80050033; /* PG | NE | ET | MP | PE | WP, as kvmlab */
	sregs.cr3 = 0x2000;
	sregs.cr4 = 0x20;       /* PAE */
	sregs.efer = 0x500;     /* LME | LMA */
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	struct timespec t0, t1;
	uint64_t exits = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x80) {
			exits++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x604)
			break;
		fprintf(stderr, "exitfloor: unexpected exit %u\n", run->exit_reason);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	printf("exitfloor: %llu exits in %lld ns\n", (unsigned long long)exits, ns);
	return 0;
}
