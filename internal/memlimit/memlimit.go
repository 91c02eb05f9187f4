// Package memlimit gives the Go runtime a soft memory limit below the
// container's: without one the collector lets the heap grow to twice what
// is live (GOGC=100), which in a pod whose memory limit is less than twice
// ampstream's in-flight budget ends in an OOM kill instead of more frequent
// collections. With a limit the collector works harder as the heap nears it.
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Ratio is the share of the container's memory limit given to the Go
// runtime: the rest covers what the runtime does not count (the rate
// tracker's arena, mapped outside the heap, and the kernel's page cache
// charged to the container).
const Ratio = 0.9

// files are the cgroup memory limits, v2 first, relative to the root.
var files = []string{"sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"}

// unlimited is where cgroup v1 reports "no limit" (a page-rounded
// MaxInt64); anything above it is no limit either.
const unlimited = 1 << 62

// Limit returns the container's memory limit in bytes read under root ("/"
// in production), and the file it came from; 0 when there is none.
func Limit(root string) (int64, string, error) {
	for _, f := range files {
		p := filepath.Join(root, f)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, p, err
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, p, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, p, fmt.Errorf("%s: not a memory limit: %q", p, s)
		}
		if n >= unlimited {
			return 0, p, nil
		}
		return n, p, nil
	}
	return 0, "", nil
}

// Result says what Set did.
type Result struct {
	Limit  int64  // the runtime's memory limit now; math.MaxInt64 when none
	Source string // "GOMEMLIMIT", the cgroup file, or "" when no limit was found
}

// Set applies Ratio of the container's memory limit (read under root) as
// the runtime's soft memory limit, unless GOMEMLIMIT is set: the operator's
// value wins, and the runtime has applied it already.
func Set(root string, getenv func(string) string) (Result, error) {
	if getenv("GOMEMLIMIT") != "" {
		return Result{Limit: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT"}, nil
	}
	limit, src, err := Limit(root)
	if err != nil || limit == 0 {
		return Result{Limit: debug.SetMemoryLimit(-1), Source: src}, err
	}
	soft := int64(float64(limit) * Ratio)
	debug.SetMemoryLimit(soft)
	return Result{Limit: soft, Source: src}, nil
}

// None reports whether r leaves the runtime without a memory limit.
func (r Result) None() bool { return r.Limit == math.MaxInt64 }
