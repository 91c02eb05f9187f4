package consume

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestMessageFitsItsSizeClass: every event has a message, in an array per
// chunk of fetchChunk (64) events, and 16 KiB is a size class of the
// allocator; a field added to message or deliver.Item makes every chunk's
// array 18 KiB, in the 18,432-byte class.
func TestMessageFitsItsSizeClass(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(message{}), uintptr(256))
	require.Equal(t, 64, fetchChunk)
}
