package route

// prefetch asks the CPU to bring the cache line at addr closer (x86
// PREFETCHT0). It is a hint: it never faults, whatever addr is, and it
// neither reads nor writes memory as far as Go (and the race detector) can
// tell, so it may be given the address of memory another goroutine is
// writing under a lock.
//
//go:noescape
func prefetch(addr uintptr)
