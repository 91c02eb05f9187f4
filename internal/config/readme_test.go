package config_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/ampstream/ampstream/internal/config"
)

// The README documents every setting: its configuration table must be the
// generated one, row for row.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var ref bytes.Buffer
	if err := config.Reference(&ref); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(ref.String(), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		if !bytes.Contains(readme, []byte(line)) {
			t.Errorf("README.md lacks the configuration row:\n%s\n(regenerate the table from internal/config/REFERENCE.md)", line)
		}
	}
}
