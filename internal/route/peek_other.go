//go:build !amd64

package route

// peekSlot reports an empty slot where no unsynchronised read is wired up
// (peek_amd64.s): prefetchEntry then prefetches nothing.
func peekSlot(p *slot) (h uint64, i uint32) { return 0, 0 }
