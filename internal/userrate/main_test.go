package userrate

import (
	"testing"

	"go.uber.org/goleak"
)

// Run owns the reader, the ticker loop and the writer; none outlives it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
