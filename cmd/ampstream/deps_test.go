package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The service binary links no lab code: the benchmark, its baseline
// forwarder and its sinks live in cmd/ampstream-bench and internal/bench,
// and nothing a production deployment runs should carry them.
func TestServiceLinksNoBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list; skipped with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/ampstream/ampstream/internal/bench") {
			t.Errorf("cmd/ampstream depends on %s", pkg)
		}
	}
}
