#!/usr/bin/env bash
# Install what building and testing kvmlab needs on a Debian machine, when it
# is missing: QEMU (the emulated host for machines without /dev/kvm), the
# kernel build tools, Debian's kernel source, cpio. Idempotent and quiet.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
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
# The container tests also run the same root file system under runc, a
# production OCI runtime, for comparison.
command -v runc >/dev/null || need+=(runc)
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
	apt-get update -qq >&2
	apt-get install -y -qq "${pkgs[@]}" >/dev/null
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
