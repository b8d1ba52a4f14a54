// Package guest holds what kvmlab boots inside its virtual machines: the
// initramfs, built with u-root (https://u-root.org) at the version pinned in
// go.mod, with kvmlab's own guest programs in it: uinit (guest/uinit), the
// isolation probe (guest/probe) and the console benchmark writer.
//
// An initramfs is a cpio archive the kernel unpacks into a RAM file system
// and runs /init from (Documentation/filesystems/ramfs-rootfs-initramfs.rst).
// u-root's init is a Go program, so the guest kernel must provide what the Go
// runtime uses from its first instructions: futexes, epoll, eventfd, signalfd
// and timerfd (see kernel-config/kvmlab.config).
//
// build.sh builds it; 'make guest' runs it and links the result into the
// cache directory where 'kvmlab run' looks for the default guest (Default,
// in CacheDir).
package guest
