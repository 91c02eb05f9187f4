package route

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on x86-64 and arm64.
const hugePage = 2 << 20

// mapArena returns n bytes of zeroed memory outside the Go heap for an
// arena, advised for transparent huge pages (madvise MADV_HUGEPAGE), and the
// whole mapping to give to unmapArena; nil when the kernel refuses the
// mapping. The advice does nothing where THP is "never"; under "madvise",
// the default of many distributions, it is what lets the kernel back the
// arena with huge pages. Nothing is resident until an entry is written.
//
// The mapping is one huge page longer than n, and mem starts on its first
// 2 MiB boundary, so no huge page is lost to a misaligned start.
func mapArena(n int) (mem, mapping []byte) {
	if n <= 0 {
		return nil, nil
	}
	mapping, err := syscall.Mmap(-1, 0, n+hugePage, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, nil
	}
	off := 0
	if r := int(uintptr(unsafe.Pointer(&mapping[0])) % hugePage); r != 0 {
		off = hugePage - r
	}
	mem = mapping[off : off+n : off+n]
	_ = syscall.Madvise(mem, syscall.MADV_HUGEPAGE) // advice: an old kernel only loses speed
	return mem, mapping
}

// unmapArena releases a mapping from mapArena.
func unmapArena(mapping []byte) { _ = syscall.Munmap(mapping) }
