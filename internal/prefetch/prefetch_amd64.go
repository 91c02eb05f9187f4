package prefetch

// line prefetches the cache line at addr into all cache levels
// (PREFETCHT0).
//
//go:noescape
func line(addr uintptr)
