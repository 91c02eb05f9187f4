package config_test

import (
	"bytes"
	"os"
	"regexp"
	"testing"
)

// The README names the settings a user changes first and links the
// generated reference for all of them (REFERENCE.md, which TestGoldenFiles
// keeps equal to the code): the link must hold, and every setting the README
// names must exist, so a renamed key cannot leave the README behind.
func TestREADMENamesOnlyRealSettings(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("(internal/config/REFERENCE.md)")) {
		t.Error("README.md does not link internal/config/REFERENCE.md")
	}
	setting := regexp.MustCompile("`((?:kafka|amplitude|realtime|batch|router|budget|dlq|limits|shutdown|admin|log)\\.[a-z_.]*[a-z_])`")
	named := setting.FindAllSubmatch(readme, -1)
	if len(named) == 0 {
		t.Fatal("README.md names no setting: did the pattern or the README change?")
	}
	for _, m := range named {
		if !bytes.Contains(ref, []byte("| `"+string(m[1])+"` |")) {
			t.Errorf("README.md names the setting %s, which REFERENCE.md does not list", m[1])
		}
	}
}
