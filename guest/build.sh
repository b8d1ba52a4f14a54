#!/usr/bin/env bash
# Build the kvmlab guest initramfs with u-root, at the version pinned in
# go.mod: u-root's init, the gosh shell (built with the goshsmall tag: plain
# line input, no terminal queries, so scripts can type at it over a serial
# line) and u-root's core commands, all in one busybox-style Go binary.
#
# Cached by the hash of go.sum, this script, the sources of uinit and of
# everything it imports (the probe, the I/O benchmark, the hostile driver and
# the kvmlab packages they use), and the Go version. Prints the path of the
# cpio on its last line of standard output.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kvmlab/initramfs"
log() { echo "guest: $*" >&2; }

cd "$root"
# Every Go file uinit is built from counts, in-tree packages it imports
# included (kvmlab-hostile uses the BAR layout of devices/virtio).
srcs="$(go list -deps -f '{{if not .Standard}}{{range .GoFiles}}{{$.Dir}}/{{.}} {{end}}{{end}}' ./guest/uinit)"
key="$( { grep u-root go.sum; cat "$here/build.sh" $srcs; go version; } | sha256sum | cut -c1-16)"
out="$cache/$key/initramfs.cpio"
if [[ -s $out ]]; then
	log "cached: $out"
	echo "$out"; exit 0
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/kvmlab-guest.XXXXXX")"
trap 'rm -rf "$work"' EXIT
src="$(go list -m -f '{{.Dir}}' github.com/u-root/u-root)"
log "building the u-root tool from $src"
go build -o "$work/u-root" github.com/u-root/u-root
log "building kvmlab's uinit"
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/uinit" ./guest/uinit
log "building the initramfs (about a minute)"
# u-root resolves its command packages relative to its own module.
# uinit is one multi-call binary (it looks at argv[0], guest/uinit/main.go):
# its other names are symlinks to it, as u-root's own commands are links to
# bbin/bb. u-root's -files archives a symlink as a symlink. Six copies of
# the 3.2 MB binary made the archive 16 MB larger, and every guest carried
# them twice: once as the initramfs kvmlab loads into its RAM, once as the
# files unpacked from it.
mkdir "$work/links"
files="-files $work/uinit:bin/uinit"
for name in reboot kvmlab-console kvmlab-probe kvmlab-io kvmlab-hostile; do
	ln -s uinit "$work/links/$name"
	files="$files -files $work/links/$name:bin/$name"
done
# $files is split on purpose: $work comes from mktemp (no spaces).
# shellcheck disable=SC2086
( cd "$src" && "$work/u-root" -go-build-tags goshsmall -defaultsh gosh $files -o "$work/initramfs.cpio" core ) 2> "$work/u-root.log" || {
	tail -20 "$work/u-root.log" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
mv "$work/initramfs.cpio" "$out"
log "built $out ($(du -h "$out" | cut -f1))"
echo "$out"
