package config

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
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
// ErrFile. Load reports every problem at once (errors.Join), each naming the
// setting and where its value came from: flag --x, env AMPSTREAM_X, or file F
// line N; a missing setting names its environment variable.
func Load(args []string, getenv func(string) string) (Config, error) {
	c, src, bad, errs := parse(args, getenv)
	if errors.Is(errors.Join(errs...), flag.ErrHelp) {
		return Config{}, flag.ErrHelp
	}
	// A value that did not parse kept its previous one; checking that would
	// only add a second, misleading message about the same setting.
	var ps []problem
	for _, p := range c.problems() {
		if !bad[p.key] {
			ps = append(ps, p)
		}
	}
	if err := errors.Join(append(errs, joinProblems(ps, src))...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Parse is Load without Validate, for tools that need only part of the
// configuration (ampstream replay needs the Kafka settings, not the API key).
func Parse(args []string, getenv func(string) string) (Config, error) {
	c, _, _, errs := parse(args, getenv)
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, err
	}
	return c, nil
}

// parse fills a Config from every source and collects all problems rather
// than stopping at the first. src maps each key that was set to where from;
// bad holds the keys whose value did not parse.
func parse(args []string, getenv func(string) string) (c Config, src map[string]string, bad map[string]bool, errs []error) {
	table := settings()
	src, bad = map[string]string{}, map[string]bool{}
	byKey := make(map[string]setting, len(table))
	for _, s := range table {
		byKey[s.key] = s
	}
	flags, configPath, errs := parseFlags(args, byKey)
	for _, err := range errs {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, nil, nil, []error{err}
		}
	}

	c = Default()
	set := func(s setting, raw, source string) error {
		if err := apply(&c, s, raw, source); err != nil {
			bad[s.key] = true
			return err
		}
		src[s.key] = source
		delete(bad, s.key) // a later source replaced the bad value
		return nil
	}

	path := configPath
	if path == "" {
		path = getenv(ConfigEnv)
	}
	if path != "" {
		if data, err := os.ReadFile(path); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrFile, err))
		} else {
			errs = append(errs, applyYAML(table, path, data, set)...)
		}
	}
	for _, s := range table {
		if v := getenv(s.env()); v != "" {
			if err := set(s, v, "env "+s.env()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, f := range flags {
		if err := set(f.setting, f.value, "flag --"+f.setting.key); err != nil {
			errs = append(errs, err)
		}
	}
	return c, src, bad, errs
}

// flagArg is one setting given on the command line.
type flagArg struct {
	setting setting
	value   string
}

// parseFlags reads --key=value, --key value and bare --bool-key (one dash
// works too, as with Go's flag package), up to "--". It reports every
// unknown flag, with the nearest setting when one is close, rather than
// stopping at the first. -h, -help and --help return flag.ErrHelp.
func parseFlags(args []string, byKey map[string]setting) (flags []flagArg, configPath string, errs []error) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			for _, rest := range args[i+1:] {
				errs = append(errs, fmt.Errorf("%w: unexpected argument %q", ErrInvalid, rest))
			}
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			errs = append(errs, fmt.Errorf("%w: unexpected argument %q", ErrInvalid, arg))
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
		name, value, hasValue := strings.Cut(name, "=")
		switch name {
		case "h", "help":
			return nil, "", []error{flag.ErrHelp}
		}
		s, known := byKey[name]
		if !known && name != ConfigFlag {
			hint := ""
			if s := suggest(name, keysOf(byKey)); s != "" {
				hint = ": did you mean --" + s + "?"
			}
			errs = append(errs, fmt.Errorf("%w: flag --%s%s", ErrUnknownKey, name, hint))
			// Its value, if it has one, is not a stray argument.
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
			continue
		}
		if !hasValue {
			if known && s.isBool() {
				value, hasValue = "true", true
			} else if i+1 < len(args) {
				i++
				value, hasValue = args[i], true
			}
		}
		if !hasValue {
			errs = append(errs, fmt.Errorf("%w: flag --%s needs a value", ErrInvalid, name))
			continue
		}
		if name == ConfigFlag {
			configPath = value
			continue
		}
		flags = append(flags, flagArg{setting: s, value: value})
	}
	return flags, configPath, errs
}

func keysOf(byKey map[string]setting) []string {
	keys := make([]string, 0, len(byKey)+1)
	for k := range byKey {
		keys = append(keys, k)
	}
	return append(keys, ConfigFlag, "help")
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

// applyYAML applies a YAML document whose nested mappings follow the dotted
// keys: kafka.tls.enabled is kafka: {tls: {enabled: true}}. A list setting
// takes a YAML sequence or a comma-separated string. A null value (key: or
// key: ~) leaves the setting as it was. Unknown and duplicate keys are errors;
// an unknown key close to a real one names it. set applies one value.
func applyYAML(table []setting, path string, data []byte, set func(s setting, raw, source string) error) []error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("%w: %s: %w", ErrFile, path, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // a file of only comments
	}
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("%w: %s: want a mapping at the top level", ErrFile, path)}
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
	w := yamlWalker{set: set, path: path, byKey: byKey, groups: groups}
	w.mapping(root, "")
	return w.errs
}

type yamlWalker struct {
	set    func(s setting, raw, source string) error
	path   string
	byKey  map[string]setting
	groups map[string]bool
	errs   []error
}

func (w *yamlWalker) fail(n *yaml.Node, err error) {
	w.errs = append(w.errs, fmt.Errorf("%w (file %s line %d)", err, w.path, n.Line))
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
		w.errs = append(w.errs, fmt.Errorf("%w: %s (file %s line %d)%s", ErrUnknownKey, key, w.path, kn.Line, w.hint(key, vn)))
	}
}

// hint proposes the key meant by an unknown one: the nearest setting or
// section by edit distance, or the setting of that name in another section
// (api_key under kafka: is amplitude.api_key).
func (w *yamlWalker) hint(key string, vn *yaml.Node) string {
	var names []string
	if vn.Kind == yaml.MappingNode {
		names = slices.Collect(maps.Keys(w.groups))
	} else {
		names = slices.Collect(maps.Keys(w.byKey))
	}
	if s := suggest(key, names); s != "" {
		return ": did you mean " + s + "?"
	}
	leaf := key[strings.LastIndexByte(key, '.')+1:]
	var same []string
	for k := range w.byKey {
		if strings.HasSuffix(k, "."+leaf) {
			same = append(same, k)
		}
	}
	if len(same) == 1 {
		return ": did you mean " + same[0] + "?"
	}
	return ""
}

func (w *yamlWalker) value(s setting, n *yaml.Node) {
	if isNull(n) {
		return
	}
	source := fmt.Sprintf("file %s line %d", w.path, n.Line)
	switch n.Kind {
	case yaml.ScalarNode:
		if err := w.set(s, n.Value, source); err != nil {
			w.errs = append(w.errs, err)
		}
	case yaml.SequenceNode:
		if _, ok := s.field(&Config{}).(*[]string); !ok {
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
		if err := w.set(s, strings.Join(items, ","), source); err != nil {
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

// SuggestEnv returns the setting's environment variable nearest to an
// unknown AMPSTREAM_* name (AMPSTREAM_KAFKA_BROKER → AMPSTREAM_KAFKA_BROKERS),
// or "" when none is close.
func SuggestEnv(name string) string {
	names := []string{ConfigEnv}
	for _, s := range settings() {
		names = append(names, s.env())
	}
	return suggest(name, names)
}

// suggest returns the candidate nearest to name by edit distance, if it is
// close enough to be a typo: at most 2 edits, and at most a third of the
// name's length so that short names do not match everything. Ties go to the
// alphabetically first candidate, so the hint is stable.
func suggest(name string, candidates []string) string {
	best, bestD := "", 0
	limit := min(2, len(name)/3)
	for _, c := range candidates {
		d := editDistance(name, c)
		if d == 0 || d > limit {
			continue
		}
		if best == "" || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance of a and b: the
// Levenshtein distance with a swap of two neighbours counting as one edit,
// the commonest typo (kafak). Bytes, as keys are ASCII.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
