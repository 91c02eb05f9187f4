//go:build !amd64

package route

// prefetch does nothing where no prefetch instruction is wired up
// (prefetch_amd64.s): lookups are then as fast as before it existed.
func prefetch(addr uintptr) {}
