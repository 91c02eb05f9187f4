package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// ConfigFlag and ConfigEnv name the optional YAML file. They are not settings
// themselves: the file cannot name another file.
const (
	ConfigFlag = "config"
	ConfigEnv  = EnvPrefix + "CONFIG"
)

// Load builds the configuration from, in rising precedence: Default, the YAML
// file named by --config (else $AMPSTREAM_CONFIG, else none), environment
// variables, and flags; then validates it.
//
// args are the command-line arguments after the program name. getenv is
// os.Getenv in production; an empty value counts as unset, so an environment
// variable cannot set a string to "" (use a flag or the file for that).
//
// With -h or --help Load returns an error wrapping flag.ErrHelp: print Usage
// and exit 0. Every other error wraps ErrInvalid, ErrMissing, ErrUnknownKey or
// ErrFile; several problems are joined with errors.Join.
func Load(args []string, getenv func(string) string) (Config, error) {
	c, err := Parse(args, getenv)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Parse is Load without Validate, for tools that need only part of the
// configuration (ampstream replay needs the Kafka settings, not the API key).
func Parse(args []string, getenv func(string) string) (Config, error) {
	table := settings()

	fs := flag.NewFlagSet("ampstream", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints Usage; flag's own text is not ours
	configPath := fs.String(ConfigFlag, "", "YAML config file")
	flagged := make([]flagValue, len(table))
	for i, s := range table {
		flagged[i] = flagValue{isBool: s.isBool()}
		fs.Var(&flagged[i], s.key, s.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		// The flag package's errors carry no sentinel, only text naming the
		// flag; "not defined" is how it reports an unknown one.
		sentinel := ErrInvalid
		if strings.Contains(err.Error(), "not defined") {
			sentinel = ErrUnknownKey
		}
		return Config{}, fmt.Errorf("%w: %v", sentinel, err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected argument %q", ErrInvalid, fs.Arg(0))
	}

	c := Default()

	path := *configPath
	if path == "" {
		path = getenv(ConfigEnv)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("%w: %w", ErrFile, err)
		}
		if err := applyYAML(&c, table, path, data); err != nil {
			return Config{}, err
		}
	}

	var errs []error
	for _, s := range table {
		if v := getenv(s.env()); v != "" {
			errs = append(errs, apply(&c, s, v, "env "+s.env()))
		}
	}
	for i, s := range table {
		if flagged[i].set {
			errs = append(errs, apply(&c, s, flagged[i].value, "flag --"+s.key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// apply sets s from raw and says where a bad value came from. Secrets are
// never echoed.
func apply(c *Config, s setting, raw, source string) error {
	if err := s.set(c, raw); err != nil {
		shown := fmt.Sprintf("%q", raw)
		if s.isSecret() {
			shown = redacted
		}
		return fmt.Errorf("%w: %s = %s (%s): %v", ErrInvalid, s.key, shown, source, err)
	}
	return nil
}

// flagValue records a flag's raw text; Load applies it after the file and
// the environment, so flags win whatever order things are parsed in.
type flagValue struct {
	value  string
	set    bool
	isBool bool
}

func (f *flagValue) String() string { return f.value }

func (f *flagValue) Set(v string) error {
	f.value, f.set = v, true
	return nil
}

// IsBoolFlag lets bool settings be given as a bare --kafka.tls.enabled.
func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// applyYAML applies a YAML document whose nested mappings follow the dotted
// keys: kafka.tls.enabled is kafka: {tls: {enabled: true}}. A list setting
// takes a YAML sequence or a comma-separated string. A null value (key: or
// key: ~) leaves the setting as it was. Unknown and duplicate keys are errors.
func applyYAML(c *Config, table []setting, path string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrFile, path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // a file of only comments
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: %s: want a mapping at the top level", ErrFile, path)
	}
	byKey := make(map[string]setting, len(table))
	groups := map[string]bool{}
	for _, s := range table {
		byKey[s.key] = s
		for i := range len(s.key) {
			if s.key[i] == '.' {
				groups[s.key[:i]] = true
			}
		}
	}
	w := yamlWalker{c: c, path: path, byKey: byKey, groups: groups}
	w.mapping(root, "")
	return errors.Join(w.errs...)
}

type yamlWalker struct {
	c      *Config
	path   string
	byKey  map[string]setting
	groups map[string]bool
	errs   []error
}

func (w *yamlWalker) fail(n *yaml.Node, err error) {
	w.errs = append(w.errs, fmt.Errorf("%w (%s line %d)", err, w.path, n.Line))
}

func (w *yamlWalker) mapping(m *yaml.Node, prefix string) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := m.Content[i], m.Content[i+1]
		key := prefix + kn.Value
		if seen[key] {
			w.fail(kn, fmt.Errorf("%w: %s appears twice", ErrInvalid, key))
			continue
		}
		seen[key] = true
		for vn.Kind == yaml.AliasNode {
			vn = vn.Alias
		}
		if s, ok := w.byKey[key]; ok {
			w.value(s, vn)
			continue
		}
		if w.groups[key] {
			if vn.Kind == yaml.MappingNode {
				w.mapping(vn, key+".")
			} else if !isNull(vn) {
				w.fail(vn, fmt.Errorf("%w: %s is a section, want a mapping", ErrInvalid, key))
			}
			continue
		}
		w.fail(kn, fmt.Errorf("%w: %s", ErrUnknownKey, key))
	}
}

func (w *yamlWalker) value(s setting, n *yaml.Node) {
	if isNull(n) {
		return
	}
	source := fmt.Sprintf("file %s line %d", w.path, n.Line)
	switch n.Kind {
	case yaml.ScalarNode:
		if err := apply(w.c, s, n.Value, source); err != nil {
			w.errs = append(w.errs, err)
		}
	case yaml.SequenceNode:
		if _, ok := s.field(w.c).(*[]string); !ok {
			w.errs = append(w.errs, fmt.Errorf("%w: %s is a %s, not a list (%s)", ErrInvalid, s.key, s.typeName(), source))
			return
		}
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				w.errs = append(w.errs, fmt.Errorf("%w: %s items must be strings (%s)", ErrInvalid, s.key, source))
				return
			}
			if strings.Contains(item.Value, ",") {
				w.errs = append(w.errs, fmt.Errorf("%w: %s item %q contains a comma (%s)", ErrInvalid, s.key, item.Value, source))
				return
			}
			items = append(items, item.Value)
		}
		if err := apply(w.c, s, strings.Join(items, ","), source); err != nil {
			w.errs = append(w.errs, err)
		}
	default:
		w.errs = append(w.errs, fmt.Errorf("%w: %s wants a %s, not a mapping (%s)", ErrInvalid, s.key, s.typeName(), source))
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// UnknownEnv returns the AMPSTREAM_* variables in environ (os.Environ's
// "NAME=value" form) that name no setting, such as a misspelt
// AMPSTREAM_KAFKA_BROKER. Load cannot see these, as it only looks names up;
// cmd decides whether to warn or fail. Only names are returned, never values.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{ConfigEnv: true}
	for _, s := range settings() {
		known[s.env()] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}
