package route

// peekSlot reads a slot's hash and entry index without the shard's lock,
// for prefetchEntry alone: a hint, which may be stale or torn (another
// goroutine may be writing the slot under the lock), and is checked before
// use, and only ever used as an address to prefetch. It is assembly so
// that the read is what it is, one unsynchronised load the compiler keeps
// and the race detector does not report: nothing is decided by it.
//
//go:noescape
func peekSlot(p *slot) (h uint64, i uint32)
