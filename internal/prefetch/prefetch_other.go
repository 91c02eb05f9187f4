//go:build !amd64

package prefetch

// line does nothing where no prefetch instruction is wired up: lookups are
// then as fast as without it.
func line(addr uintptr) {}
