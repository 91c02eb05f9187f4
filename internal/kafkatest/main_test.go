package kafkatest

import (
	"testing"

	"go.uber.org/goleak"
)

// The package promises that its helpers own no goroutines after they return and that Start's
// broker stops in t.Cleanup; goleak holds it to that (and the tests to closing their groups).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
