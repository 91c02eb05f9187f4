//go:build !linux

package route

// mapArena maps arenas on Linux only (arena_linux.go); elsewhere chunks are
// heap allocations.
func mapArena(int) (mem, mapping []byte) { return nil, nil }

func unmapArena([]byte) {}
