package app

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ampstream/ampstream/internal/group"
)

// The generation gauge reads -1 whenever /readyz says "not a member", even if
// the member holds a generation it has not synced or lost contact in.
func TestGenerationIsMinusOneOutsideMembership(t *testing.T) {
	t.Parallel()
	assert.EqualValues(t, 7, generation(group.State{Member: true, Generation: 7}))
	assert.EqualValues(t, -1, generation(group.State{Member: false, Generation: 7, Reason: "waiting for the assignment"}))
	assert.EqualValues(t, -1, generation(group.State{Reason: "not started", Generation: -1}))
}
