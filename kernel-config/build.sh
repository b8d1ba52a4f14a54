#!/usr/bin/env bash
# Build the kvmlab guest kernel: `make tinyconfig`, then merge kvmlab.config on
# top, then `make bzImage`. The result is cached by the hash of the source
# tarball, the fragment and this script, so a rerun costs a second.
#
# Source, first found wins:
#   $KVMLAB_LINUX_TARBALL            a local linux-*.tar.{xz,gz}
#   /usr/src/linux-source-6.1.tar.xz Debian's linux-source-6.1 (installed with
#                                    apt-get when we are root and it is missing)
#   kernel.org                       linux-$KVMLAB_LINUX_VERSION (default 6.1.119)
#
# Prints the cache directory (holding bzImage, vmlinux, System.map, .config)
# on its last line of standard output.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kvmlab/kernel"
jobs="${KVMLAB_JOBS:-$(nproc)}"
log() { echo "kernel-config: $*" >&2; }

find_source() {
	if [[ -n "${KVMLAB_LINUX_TARBALL:-}" ]]; then
		[[ -r "$KVMLAB_LINUX_TARBALL" ]] || { log "KVMLAB_LINUX_TARBALL=$KVMLAB_LINUX_TARBALL is not readable"; exit 1; }
		echo "$KVMLAB_LINUX_TARBALL"; return
	fi
	local deb=/usr/src/linux-source-6.1.tar.xz
	if [[ ! -r $deb && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing linux-source-6.1 with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source-6.1 >&2 ||
			{ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source-6.1 >&2; } || true
	fi
	if [[ -r $deb ]]; then echo "$deb"; return; fi
	local v="${KVMLAB_LINUX_VERSION:-6.1.119}"
	local dl="${XDG_CACHE_HOME:-$HOME/.cache}/kvmlab/src/linux-$v.tar.xz"
	if [[ ! -r $dl ]]; then
		mkdir -p "$(dirname "$dl")"
		log "downloading linux-$v from kernel.org"
		curl -fL --retry 2 -o "$dl.part" "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-$v.tar.xz" >&2
		mv "$dl.part" "$dl"
	fi
	echo "$dl"
}

src="$(find_source)"
# The tarball is identified by name, size and mtime rather than hashed in full:
# hashing 130 MB on every `make run` would cost more than it saves.
key="$( { stat -c '%n %s %Y' "$src"; cat "$here/kvmlab.config" "$here/build.sh"; } | sha256sum | cut -c1-16)"
out="$cache/$key"
if [[ -s $out/bzImage ]]; then
	log "cached: $out"
	echo "$out"; exit 0
fi

for tool in make gcc flex bison bc; do
	command -v $tool >/dev/null || { log "missing build tool '$tool': apt-get install build-essential flex bison bc libelf-dev"; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/kvmlab-kernel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "unpacking $src"
tar -xf "$src" -C "$work"
tree="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)"
cd "$tree"
log "configuring (tinyconfig + kvmlab.config)"
make -s tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$here/kvmlab.config" >&2
make -s olddefconfig >&2
# merge_config reports values that did not stick; fail loudly on the ones a
# Go init cannot live without, and on those `kvmlab container` needs in the
# guest (IPC_NS once silently did not stick: it depends on SYSVIPC).
for opt in FUTEX EPOLL SIGNALFD TIMERFD EVENTFD SERIAL_8250_CONSOLE BLK_DEV_INITRD KVM_GUEST ACPI IPC_NS PID_NS NET_NS UTS_NS MEMCG CGROUP_PIDS; do
	grep -q "^CONFIG_$opt=y" .config || { log "CONFIG_$opt did not end up =y"; exit 1; }
done
log "building bzImage with $jobs jobs (about 10-15 minutes on 2 cores)"
start=$SECONDS
make -s -j"$jobs" bzImage >&2
log "built in $((SECONDS - start)) s"
mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage vmlinux System.map .config "$out.tmp/"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out"
