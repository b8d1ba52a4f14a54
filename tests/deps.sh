#!/usr/bin/env bash
# Install what building and testing kvmlab needs on a Debian machine, when it
# is missing: QEMU and Bochs (the emulated AMD and Intel hosts for machines
# without /dev/kvm), the kernel build tools, Debian's kernel source, cpio.
# Idempotent and quiet.
set -euo pipefail
need=()

# The emulated host needs QEMU 9.1 or newer. Older QEMUs emulate AMD SVM well
# enough to boot nested guests, but not their debug intercepts: QEMU 7.2
# (Debian 12's) loads the guest's DR7 at VMRUN without arming its breakpoints
# and leaves stale ones armed after #VMEXIT, which locks the emulated host up
# on the first single-step or hardware breakpoint; 9.1 fixed that ("disable/
# enable breakpoints on vmentry/vmexit"). On Debian 12 a newer QEMU comes from
# bookworm-backports, on the archive this machine already uses.
qemu_new_enough() {
	local v
	v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
	[[ -n $v ]] || return 1
	set -- $v
	(($1 > 9 || ($1 == 9 && $2 >= 1)))
}
backports=
if ! qemu_new_enough; then
	need+=(qemu-system-x86)
	if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
		backports=bookworm-backports
	fi
fi
for t in make gcc flex bison bc cpio xz; do
	command -v $t >/dev/null || need+=("$t")
done
[[ -r /usr/include/libelf.h ]] || need+=(libelf-dev)
[[ -r /usr/include/openssl/ssl.h ]] || need+=(libssl-dev)
[[ -r /usr/src/linux-source-6.1.tar.xz ]] || need+=(linux-source-6.1)
command -v iasl >/dev/null || need+=(acpica-tools) # the ACPI tests disassemble kvmlab's tables with it
# The virtio tests make and read ext4 images and set up a TAP in a network
# namespace (the tools are copied into the emulated host).
command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v ip >/dev/null || need+=(iproute2)
# Labs 1 to 3 build their guests with GNU as and ld (TestLabs: in the emulated host too).
command -v as >/dev/null && command -v ld >/dev/null || need+=(binutils)
# The container tests also run the same root file system under runc, a
# production OCI runtime, for comparison.
command -v runc >/dev/null || need+=(runc)
# TestGDB debugs the guest kernel with Debian's gdb (copied into the emulated host).
command -v gdb >/dev/null || need+=(gdb)
# The emulated Intel host (VT-x, issue 13): Bochs 2.7 (Debian 12's) with its
# BIOS and VGA BIOS, booting an ISOLINUX CD image that xorriso writes.
bochs --help 2>&1 | grep -qE 'Bochs x86 Emulator (2\.([7-9]|[1-9][0-9])|[3-9]\.)' || need+=(bochs)
[[ -r /usr/share/bochs/BIOS-bochs-latest ]] || need+=(bochsbios)
[[ -r /usr/share/vgabios/vgabios.bin ]] || need+=(vgabios)
[[ -r /usr/lib/ISOLINUX/isolinux.bin ]] || need+=(isolinux)
[[ -r /usr/lib/syslinux/modules/bios/ldlinux.c32 ]] || need+=(syslinux-common)
command -v xorriso >/dev/null || need+=(xorriso)
# kvmlab completion zsh is checked by sourcing it in a real zsh (cmd/kvmlab's
# TestCLI/zsh_completion), which must not skip.
command -v zsh >/dev/null || need+=(zsh)
if ((${#need[@]})); then
	# map tool names to packages
	pkgs=()
	for n in "${need[@]}"; do
		case $n in
		gcc | make) pkgs+=(build-essential) ;;
		xz) pkgs+=(xz-utils) ;;
		*) pkgs+=("$n") ;;
		esac
	done
	if [[ $(id -u) != 0 ]]; then
		echo "deps: missing ${pkgs[*]}: install them with: sudo apt-get install ${pkgs[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if [[ -n $backports ]]; then
		list=/etc/apt/sources.list.d/kvmlab-$backports.sources
		if [[ ! -e $list ]]; then
			# The same Debian archive as bookworm itself, its backports suite.
			uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
			[[ -n $uri ]] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
			[[ -n $uri ]] || { echo "deps: no Debian archive found in /etc/apt to take $backports from: install QEMU 9.1 or newer by hand" >&2; exit 1; }
			printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" "$backports" >"$list"
			echo "deps: added $backports ($list) for QEMU 9.1 or newer" >&2
		fi
	fi
	apt-get update -qq >&2
	rest=()
	for p in "${pkgs[@]}"; do
		[[ -n $backports && $p == qemu-system-x86 ]] || rest+=("$p")
	done
	((${#rest[@]} == 0)) || apt-get install -y -qq "${rest[@]}" >/dev/null
	if [[ -n $backports ]]; then
		apt-get install -y -qq -t "$backports" qemu-system-x86 >/dev/null
	fi
	qemu_new_enough || { echo "deps: QEMU 9.1 or newer is needed for the emulated host; have: $(qemu-system-x86_64 --version 2>/dev/null | head -1)" >&2; exit 1; }
fi
# The comparison's HTML report is rendered in headless Chromium by a test.
# Without its recommended packages it is 8 packages instead of about 100.
if ! command -v chromium >/dev/null; then
	if [[ $(id -u) != 0 ]]; then
		echo "deps: missing chromium: install it with: sudo apt-get install --no-install-recommends chromium" >&2
		exit 1
	fi
	echo "deps: installing chromium (headless, for the HTML report test)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
fi
command -v go >/dev/null || { [[ -x /usr/local/go/bin/go ]] && echo "deps: add /usr/local/go/bin to PATH" >&2; echo "deps: Go is required (https://go.dev/dl)" >&2; exit 1; }
