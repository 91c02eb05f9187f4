package memlimit

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLimitReadsCgroupV2ThenV1(t *testing.T) {
	for _, c := range []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr bool
	}{
		{"v2", map[string]string{"sys/fs/cgroup/memory.max": "1073741824\n"}, 1 << 30, false},
		{"v2 unlimited", map[string]string{"sys/fs/cgroup/memory.max": "max\n"}, 0, false},
		{"v1", map[string]string{"sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 512 << 20, false},
		{"v1 unlimited", map[string]string{"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"v2 wins", map[string]string{"sys/fs/cgroup/memory.max": "1000", "sys/fs/cgroup/memory/memory.limit_in_bytes": "2000"}, 1000, false},
		{"none", nil, 0, false},
		{"garbage", map[string]string{"sys/fs/cgroup/memory.max": "lots"}, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range c.files {
				writeFile(t, root, name, content)
			}
			got, _, err := Limit(root)
			if (err != nil) != c.wantErr || got != c.want {
				t.Fatalf("Limit = %d, %v; want %d, error %v", got, err, c.want, c.wantErr)
			}
		})
	}
}

// TestSetAppliesTheRatioUnlessGOMEMLIMITIsSet changes the process's memory
// limit, so it restores it and does not run in parallel.
func TestSetAppliesTheRatioUnlessGOMEMLIMITIsSet(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	root := t.TempDir()
	writeFile(t, root, "sys/fs/cgroup/memory.max", "1000000000")
	noEnv := func(string) string { return "" }

	r, err := Set(root, noEnv)
	if err != nil || r.Limit != 900_000_000 || debug.SetMemoryLimit(-1) != 900_000_000 || r.None() {
		t.Fatalf("Set = %+v, %v; runtime limit %d; want 900000000 from the cgroup", r, err, debug.SetMemoryLimit(-1))
	}

	debug.SetMemoryLimit(math.MaxInt64)
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "300MiB"
		}
		return ""
	}
	if r, err := Set(root, env); err != nil || r.Source != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("with GOMEMLIMIT set: %+v, %v, runtime limit %d; want it left alone", r, err, debug.SetMemoryLimit(-1))
	}

	if r, err := Set(t.TempDir(), noEnv); err != nil || !r.None() {
		t.Fatalf("without a cgroup limit: %+v, %v; want no limit", r, err)
	}
}
