package route

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestArenaIsAMappingAdvisedForHugePages checks the advice itself, which
// does not depend on the machine's THP setting: the mapping holding the
// arena carries the kernel's "hg" flag (VM_HUGEPAGE), starts its entries on
// a huge-page boundary, and is unmapped once the tracker is collected.
// Whether huge pages then back it is the kernel's call.
func TestArenaIsAMappingAdvisedForHugePages(t *testing.T) {
	start := func() uintptr {
		tr := testTracker(TrackerOptions{MaxKeys: 100_000})
		now := time.Unix(1_800_000_000, 0)
		for i := range 5000 {
			tr.Observe([]byte("device-"+strconv.Itoa(i)), now, 30)
		}
		a := tr.shards[0].tab.a
		require.NotZero(t, a.mapped, "the arena is a mapping")
		start := uintptr(unsafe.Pointer(a.chunks[0].Load()))
		require.Zero(t, start%hugePage, "entries start on a huge-page boundary")
		flags, ok := vmFlags(t, start)
		require.True(t, ok, "no mapping holds the arena at %#x", start)
		require.Contains(t, flags, "hg", "VmFlags of the arena at %#x", start)
		n, _ := tr.Stats(now)
		require.Equal(t, 5000, n, "every key is still tracked")
		return start
	}()
	// The tracker is unreachable now: a collection runs the cleanup.
	require.Eventually(t, func() bool {
		runtime.GC()
		_, mapped := vmFlags(t, start)
		return !mapped
	}, 10*time.Second, 10*time.Millisecond, "the arena at %#x is still mapped after its tracker became unreachable", start)
}

// vmFlags returns the VmFlags of the mapping holding addr, from
// /proc/self/smaps; ok is false when no mapping holds it.
func vmFlags(t *testing.T, addr uintptr) (flags []string, ok bool) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var inside bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if lo, hi, isRange := vmaRange(line); isRange {
			inside = lo <= addr && addr < hi
			continue
		}
		if inside && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(line)[1:], true
		}
	}
	require.NoError(t, sc.Err())
	return nil, false
}

// vmaRange parses an smaps header line ("7f…-7f… rw-p …").
func vmaRange(line string) (lo, hi uintptr, ok bool) {
	addr, _, found := strings.Cut(line, " ")
	l, h, dash := strings.Cut(addr, "-")
	if !found || !dash {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(l, 16, 64)
	b, err2 := strconv.ParseUint(h, 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}
