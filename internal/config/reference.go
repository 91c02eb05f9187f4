package config

import (
	"fmt"
	"io"
	"strings"
)

// Usage writes the --help text: every setting with its flag, environment
// variable, type, default and meaning.
func Usage(w io.Writer, program string) error {
	def := Default()
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n", program)
	b.WriteString("Every setting is a flag, an environment variable and a key in the YAML file.\n")
	b.WriteString("Precedence: flag > env > file > default. Lists are comma-separated;\n")
	b.WriteString("durations use Go syntax (250ms, 30s, 1h); byte counts take KB/MB/GB or KiB/MiB/GiB.\n\n")
	fmt.Fprintf(&b, "  --%s path   (env %s)\n        YAML config file\n", ConfigFlag, ConfigEnv)
	for _, s := range settings() {
		fmt.Fprintf(&b, "  --%s %s   (env %s)\n        %s", s.key, s.typeName(), s.env(), s.help)
		if d := s.format(&def); d != "" {
			fmt.Fprintf(&b, " (default %s)", d)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Reference writes the settings as a Markdown table for the README and
// REFERENCE.md, with defaults taken from Default.
func Reference(w io.Writer) error {
	def := Default()
	var b strings.Builder
	b.WriteString("| key / flag | env | type | default | meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, s := range settings() {
		d := s.format(&def)
		if d == "" {
			d = `""`
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | `%s` | %s |\n", s.key, s.env(), mdEscape(s.typeName()), d, mdEscape(s.help))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
