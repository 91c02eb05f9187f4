// Package prefetch asks the CPU to start loading memory a goroutine is about
// to read, so that cache misses overlap each other and useful work instead
// of stalling it one at a time: the router's table slots of the next events
// (internal/route), the lines of a record batch ahead of its decoder
// (internal/fetch).
//
// A prefetch is a hint. It never faults, whatever the address, and it
// neither reads nor writes memory as far as Go and the race detector can
// tell, so it may be given the address of memory another goroutine writes
// under a lock, or of memory no longer in use. On amd64 it is PREFETCHT0
// (prefetch_amd64.s); elsewhere it does nothing.
//
// It is assembly because Go has no prefetch intrinsic, and it is kept for
// a measured end-to-end gain: with line a no-op, ampstream used 4.49 CPU s
// per million events against 4.11 with PREFETCHT0 (−8 %), and ran at
// 55k events/s against 79k (medians of three alternating runs of
// `go run ./cmd/ampstream-bench --skip-emulator --skip-latency --skip-cost --skip-realtime --skip-baseline --pairs 1 --events 2000000`
// on a shared 2-core host).
package prefetch

import "unsafe"

// LineSize is the cache line size assumed by Bytes.
const LineSize = 64

// Line prefetches the cache line holding the byte at p.
func Line(p unsafe.Pointer) { line(uintptr(p)) }

// Bytes prefetches every cache line b spans.
func Bytes(b []byte) {
	if len(b) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := p + uintptr(len(b))
	for p &^= LineSize - 1; p < end; p += LineSize {
		line(p)
	}
}
