package config

import (
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
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

// Entry is one setting's effective value, for the startup log and the status
// page. Secrets show as "[redacted]" (or "" when unset).
type Entry struct {
	Key   string // e.g. "kafka.brokers"
	Env   string // e.g. "AMPSTREAM_KAFKA_BROKERS"
	Value string // in the syntax the flag and env var accept
}

// Entries lists every setting of c in table order.
func (c Config) Entries() []Entry {
	table := settings()
	out := make([]Entry, len(table))
	for i, s := range table {
		out[i] = Entry{Key: s.key, Env: s.env(), Value: s.format(&c)}
	}
	return out
}

// WriteYAML writes c as a config file, every setting under its nested key
// with its help as a comment. Secrets are written as "" so the output never
// holds one; set them through the environment. Loading the output gives c
// back, secrets aside.
func WriteYAML(w io.Writer, c Config) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	sections := map[string]*yaml.Node{"": root}
	for _, s := range settings() {
		parent := ""
		parts := strings.Split(s.key, ".")
		for _, p := range parts[:len(parts)-1] {
			path := strings.TrimPrefix(parent+"."+p, ".")
			if sections[path] == nil {
				m := &yaml.Node{Kind: yaml.MappingNode}
				sections[parent].Content = append(sections[parent].Content, &yaml.Node{Kind: yaml.ScalarNode, Value: p}, m)
				sections[path] = m
			}
			parent = path
		}
		key := &yaml.Node{Kind: yaml.ScalarNode, Value: parts[len(parts)-1], HeadComment: s.help}
		sections[parent].Content = append(sections[parent].Content, key, yamlValue(s, &c))
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return fmt.Errorf("encode config as YAML: %w", err)
	}
	return enc.Close()
}

func yamlValue(s setting, c *Config) *yaml.Node {
	switch p := s.field(c).(type) {
	case *[]string:
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, item := range *p {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: item})
		}
		return seq
	case *Secret:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}
	case *string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: *p}
	default:
		// Numbers, bools and durations: plain scalars in set's syntax.
		return &yaml.Node{Kind: yaml.ScalarNode, Value: s.format(c)}
	}
}
