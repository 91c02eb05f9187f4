package prefetch

import (
	"testing"
	"unsafe"
)

// A prefetch is only a hint, but it must accept any memory: empty, one
// byte, ranges that start and end mid-line, and addresses of nothing.
func TestPrefetchTakesAnyMemory(t *testing.T) {
	buf := make([]byte, 10*LineSize+3)
	Bytes(nil)
	Bytes(buf[:0])
	Bytes(buf[:1])
	Bytes(buf[LineSize-1 : 3*LineSize+1])
	Bytes(buf)
	Line(unsafe.Pointer(&buf[len(buf)-1]))
	Line(nil)
	var x int
	line(uintptr(unsafe.Pointer(&x)) + 1<<40) // most likely unmapped: never faults
	line(^uintptr(0))
}

func BenchmarkBytes4KiB(b *testing.B) {
	buf := make([]byte, 4<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Bytes(buf)
	}
}
