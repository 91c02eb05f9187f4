package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/ampstream/ampstream/internal/config"
)

// Exit statuses, as kubectl, helm and Go's flag package use them: 2 means the
// command line or the configuration is wrong and retrying cannot help; 1 means
// the command ran and failed.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line or the configuration. help
// names the command whose --help lists what is accepted.
type usageError struct {
	help string
	err  error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErr(help string, err error) error { return &usageError{help: help, err: err} }

// exitCode is the status for err; configuration errors count as usage errors.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue),
		errors.Is(err, config.ErrInvalid), errors.Is(err, config.ErrMissing),
		errors.Is(err, config.ErrUnknownKey), errors.Is(err, config.ErrFile):
		return exitUsage
	}
	return exitFailure
}

// report writes err to w: one line, or a numbered list when it joins several
// problems (Load reports all configuration problems at once), then where to
// look for the accepted flags.
func report(w io.Writer, err error) {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	if list := flatten(err); len(list) > 1 {
		fmt.Fprintf(w, "ampstream: %d problems:\n", len(list))
		for i, e := range list {
			fmt.Fprintf(w, "  %d. %s\n", i+1, e)
		}
	} else {
		fmt.Fprintln(w, "ampstream:", err)
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.help != "" {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", ue.help)
	}
}

// flatten lists the leaves of errors.Join trees, in order.
func flatten(err error) []error {
	if ue, ok := err.(*usageError); ok {
		err = ue.err
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// newFlagSet returns a flag set that prints nothing itself: parseFlags
// writes its help in `ampstream run --help`'s layout and returns its errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args with fs. With -h/--help it writes the help to stdout
// and returns flag.ErrHelp (exit 0); a bad flag is a usage error.
func parseFlags(fs *flag.FlagSet, synopsis string, args []string, stdout io.Writer) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(stdout, fs, synopsis)
		return flag.ErrHelp
	}
	if err != nil {
		// flag's messages say "-name"; every help text says "--name".
		msg := strings.ReplaceAll(err.Error(), ": -", ": --")
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			var names []string
			fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
			if s := closest(strings.TrimPrefix(name, "-"), names); s != "" {
				msg += " (did you mean --" + s + "?)"
			}
		}
		return usageErr(fs.Name(), errors.New(msg))
	}
	if fs.NArg() > 0 {
		return usageErr(fs.Name(), fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

// writeHelp prints the help of fs in config.Usage's layout.
func writeHelp(w io.Writer, fs *flag.FlagSet, synopsis string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n%s\n\n", fs.Name(), synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		typ, help := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		fmt.Fprintf(&b, "\n        %s", help)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	_, _ = io.WriteString(w, b.String())
}

// newLogger builds the process logger. The console format colours its
// output only on a terminal: in a file, `docker logs` or a log shipper the
// escape codes are noise.
func newLogger(w io.Writer, level, format string) zerolog.Logger {
	if format == config.LogFormatConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05", NoColor: !isTerminal(w)}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
