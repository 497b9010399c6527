package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The conventions of every subcommand, kept here in one place:
//   - `uffd CMD -h` prints CMD's usage: its synopsis, what it does, its
//     positional arguments and its flags; an error in CMD's command line
//     prints the error and CMD's usage, not the top-level one;
//   - flags may come before, between or after the positional arguments
//     (`uffd demo 2 --delay 1ms`); "--" ends the flags;
//   - help spells flags with two dashes (one is accepted too) and names
//     each flag's value by its type: int, duration, size, path, or a word
//     for the kind of string;
//   - a bad value reads "--name VALUE: what is wanted", whether it is not a
//     number or out of range, for flags and positional arguments alike.

// command is a subcommand.
type command struct {
	name    string
	args    string // the positional arguments as the synopsis shows them
	summary string // what it does, in the top-level usage (one line)
	// about is the usage after the synopsis: what the command does and,
	// one per line as "NAME  meaning", its positional arguments.
	about     string
	arguments [][2]string
	// required lists flags the synopsis shows outside [flags].
	required []string
	// setup defines the command's flags on fs and returns what runs it,
	// given the positional arguments. Nil for a command that is only a
	// group of subs.
	setup func(fs *flag.FlagSet) runFunc
	// sub are commands under this one (`uffd image push`), named "c sub":
	// a first argument that names one runs it.
	sub []*command
}

type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// commands are the subcommands, in the order the usage lists them.
func commands() []*command {
	return []*command{demoCmd, featuresCmd, benchCmd, firecrackerCmd, stressCmd, imageCmd, hazardCmd, versionCmd}
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageError is an error in the command line (exit status 2): run prints
// it with the usage of cmd, or the top-level usage when cmd is nil.
type usageError struct {
	cmd *command
	msg string
}

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

// errUsage marks errors in the command line.
var errUsage = errors.New("usage")

// usagef returns a usage error; returned by a command's run, it becomes
// that command's (see execute).
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// usagef returns a usage error of c, its message prefixed with c's name.
func (c *command) usagef(format string, args ...any) error {
	return &usageError{cmd: c, msg: c.name + ": " + fmt.Sprintf(format, args...)}
}

// flags returns c's flag set with its flags defined, and what runs c.
func (c *command) flags() (*flag.FlagSet, runFunc) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if c.setup == nil {
		return fs, func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) == 0 {
				return usagef("want a command: %s", orList(c.subNames()))
			}
			return usagef("unknown command %q: want %s", args[0], orList(c.subNames()))
		}
	}
	return fs, c.setup(fs)
}

// subNames lists the last words of c's subs' names.
func (c *command) subNames() []string {
	var names []string
	for _, s := range c.sub {
		names = append(names, s.name[strings.LastIndexByte(s.name, ' ')+1:])
	}
	return names
}

// execute parses args and runs c. -h prints c's usage on stdout and
// returns flag.ErrHelp.
func (c *command) execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		for _, s := range c.sub {
			if s.name == c.name+" "+args[0] {
				return s.execute(ctx, args[1:], stdout, stderr)
			}
		}
	}
	fs, run := c.flags()
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, c.usage())
		return err
	}
	if err != nil {
		return c.usagef("%v", err)
	}
	var bad []string
	fs.Visit(func(f *flag.Flag) {
		if v, ok := f.Value.(checked); ok {
			if err := v.check(); err != nil {
				bad = append(bad, fmt.Sprintf("--%s %s: %v", f.Name, v.String(), err))
			}
		}
	})
	if len(bad) > 0 {
		return c.usagef("%s", strings.Join(bad, "; "))
	}
	err = run(ctx, pos, stdout, stderr)
	if ue, ok := err.(*usageError); ok && ue.cmd == nil {
		ue.cmd, ue.msg = c, c.name+": "+ue.msg
	}
	return err
}

// parseInterspersed parses args with fs, letting flags follow positional
// arguments, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first non-flag, or after "--", which
		// ends the flags for good.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" && !takesValue(fs, args, consumed-2) {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// takesValue reports whether args[i] is a flag that took the next
// argument as its value.
func takesValue(fs *flag.FlagSet, args []string, i int) bool {
	if i < 0 {
		return false
	}
	name, ok := strings.CutPrefix(args[i], "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimPrefix(name, "-"))
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

// usage is c's usage text: synopsis, about, arguments and flags.
func (c *command) usage() string {
	fs, _ := c.flags()
	var sb strings.Builder
	fmt.Fprintf(&sb, "Usage: uffd %s\n", c.synopsis(fs))
	if c.about != "" {
		fmt.Fprintf(&sb, "\n%s\n", strings.TrimSpace(c.about))
	}
	if len(c.arguments) > 0 {
		sb.WriteString("\nArguments:\n")
		w := 0
		for _, a := range c.arguments {
			w = max(w, len(a[0]))
		}
		for _, a := range c.arguments {
			fmt.Fprintf(&sb, "  %-*s  %s\n", w, a[0], a[1])
		}
	}
	if hasFlags(fs) {
		sb.WriteString("\nFlags:\n")
		printFlags(&sb, fs)
	}
	if len(c.sub) > 0 {
		sb.WriteString("\nCommands:\n")
		for _, s := range c.sub {
			sfs, _ := s.flags()
			fmt.Fprintf(&sb, "  uffd %s\n", s.synopsis(sfs))
			for _, l := range wrap(s.summary, 70) {
				fmt.Fprintf(&sb, "        %s\n", l)
			}
		}
		fmt.Fprintf(&sb, "\nRun 'uffd %s <command> -h' for a command's arguments and flags.\n", c.name)
	}
	return sb.String()
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// synopsis is "name [flags] args": every flag spelled out when there are
// at most three, the required ones and [flags] otherwise.
func (c *command) synopsis(fs *flag.FlagSet) string {
	parts := []string{c.name}
	var all []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { all = append(all, f) })
	for _, name := range c.required {
		f := fs.Lookup(name)
		typ, _ := flagType(f)
		parts = append(parts, "--"+name+" "+typ)
	}
	if len(all) <= 3 {
		for _, f := range all {
			if typ, _ := flagType(f); typ == "" {
				parts = append(parts, "[--"+f.Name+"]")
			} else {
				parts = append(parts, "[--"+f.Name+" "+typ+"]")
			}
		}
	} else if len(all) > len(c.required) {
		parts = append(parts, "[flags]")
	}
	if c.setup == nil && len(c.sub) > 0 {
		parts = append(parts, strings.Join(c.subNames(), "|"))
	}
	if c.args != "" {
		parts = append(parts, c.args)
	}
	return strings.Join(parts, " ")
}

// flagType returns the name of f's value ("" for a boolean flag) and its
// usage without the quotes of that name, by flag.UnquoteUsage's
// convention: a `word` in the usage names the value; otherwise its type.
func flagType(f *flag.Flag) (typ, usage string) {
	typ, usage = flag.UnquoteUsage(f)
	if !strings.Contains(f.Usage, "`") {
		if t, ok := f.Value.(interface{ Type() string }); ok {
			typ = t.Type()
		}
	}
	return typ, usage
}

// printFlags prints fs's flags as flag.PrintDefaults does, spelled with
// two dashes.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flagType(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n", line)
		if def := f.DefValue; def != "" && def != "false" && def != "0" {
			if typ == "string" {
				def = strconv.Quote(def)
			}
			usage += " (default " + def + ")"
		}
		for _, l := range wrap(usage, 72) {
			fmt.Fprintf(w, "        %s\n", l)
		}
	})
}

// wrap breaks s into lines of at most width bytes, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) > width:
			lines = append(lines, line)
			line = word
		default:
			line += " " + word
		}
	}
	return append(lines, line)
}

// topUsage is the usage of `uffd` itself.
func topUsage() string {
	var sb strings.Builder
	sb.WriteString("Usage: uffd <command> [arguments]\n\nCommands:\n")
	for _, c := range commands() {
		fs, _ := c.flags()
		fmt.Fprintf(&sb, "  %s\n", c.synopsis(fs))
		for _, l := range wrap(c.summary, 70) {
			fmt.Fprintf(&sb, "        %s\n", l)
		}
	}
	sb.WriteString("\nRun 'uffd <command> -h' (or 'uffd help <command>') for a command's\narguments and flags, 'uffd --version' for the version.\n")
	return sb.String()
}

// Flag values. Each keeps what was typed; Set never fails, and
// execute checks every flag given (check) so that every bad value reads
// alike: "--name VALUE: what is wanted".

// checked is a flag value that execute checks after parsing.
type checked interface {
	flag.Value
	check() error
}

// stringFlag defines a string flag whose value is named typ in help
// ("path", "addr", "mode"...).
func stringFlag(fs *flag.FlagSet, name, def, typ, usage string) *string {
	v := &stringValue{p: new(string), typ: typ}
	*v.p = def
	fs.Var(v, name, usage)
	return v.p
}

type stringValue struct {
	p   *string
	typ string
}

func (v *stringValue) Type() string { return v.typ }
func (v *stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v *stringValue) Set(s string) error { *v.p = s; return nil }

// intValue is an int flag with a range.
type intValue struct {
	p        *int
	raw      string
	min, max int // max 0: none
	err      error
}

// intFlag defines an int flag that must be in [min, max] (max 0: no upper
// bound) when given.
func intFlag(fs *flag.FlagSet, name string, def, min, max int, usage string) *int {
	v := &intValue{p: new(int), min: min, max: max}
	*v.p = def
	v.raw = strconv.Itoa(def)
	fs.Var(v, name, usage)
	return v.p
}

func (v *intValue) Type() string { return "int" }
func (v *intValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *intValue) Set(s string) error {
	v.raw = s
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil {
		v.err = errors.New("not a number")
		return nil
	}
	*v.p, v.err = int(n), nil
	return nil
}

func (v *intValue) check() error {
	if v.err != nil {
		return fmt.Errorf("%w; %s", v.err, rangeText(v.min, v.max))
	}
	if *v.p < v.min || v.max != 0 && *v.p > v.max {
		return errors.New(rangeText(v.min, v.max))
	}
	return nil
}

// rangeText says what range of integers is wanted.
func rangeText(min, max int) string {
	if max == 0 {
		return fmt.Sprintf("want at least %d", min)
	}
	return fmt.Sprintf("want %d to %d", min, max)
}

// checkArg checks a positional integer argument: named name in the usage,
// in [min, max] (max 0: no upper bound). Its errors read as flags' do.
func checkArg(name, s string, min, max int) (int, error) {
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s %s: not a number; %s", name, s, rangeText(min, max))
	case int(n) < min || max != 0 && int(n) > max:
		return 0, fmt.Errorf("%s %s: %s", name, s, rangeText(min, max))
	}
	return int(n), nil
}

// durationValue is a duration flag that must be at least min when given.
type durationValue struct {
	p   *time.Duration
	raw string
	min time.Duration
	err error
}

// durationFlag defines a duration flag that must be at least min.
func durationFlag(fs *flag.FlagSet, name string, def, min time.Duration, usage string) *time.Duration {
	v := &durationValue{p: new(time.Duration), min: min}
	*v.p = def
	if def != 0 {
		v.raw = def.String() // a zero default is not printed: the usage says what 0 means
	}
	fs.Var(v, name, usage)
	return v.p
}

func (v *durationValue) Type() string { return "duration" }
func (v *durationValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *durationValue) Set(s string) error {
	v.raw = s
	d, err := time.ParseDuration(s)
	if err != nil {
		v.err = errors.New("not a duration (such as 500ms, 5s or 1m)")
		return nil
	}
	*v.p, v.err = d, nil
	return nil
}

func (v *durationValue) check() error {
	if v.err != nil {
		return v.err
	}
	if *v.p < v.min {
		if v.min == time.Nanosecond {
			return errors.New("want more than 0")
		}
		return fmt.Errorf("want at least %v", v.min)
	}
	return nil
}

// choiceValue is a string flag with a fixed set of values.
type choiceValue struct {
	p       *string
	choices []string
}

// choiceFlag defines a string flag whose value is one of choices.
func choiceFlag(fs *flag.FlagSet, name, def string, choices []string, usage string) *string {
	v := &choiceValue{p: new(string), choices: choices}
	*v.p = def
	fs.Var(v, name, usage)
	return v.p
}

func (v *choiceValue) Type() string { return "string" }
func (v *choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v *choiceValue) Set(s string) error { *v.p = s; return nil }
func (v *choiceValue) check() error {
	if slices.Contains(v.choices, *v.p) {
		return nil
	}
	return errors.New("want " + orList(v.choices))
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// Sizes: a byte count with an optional unit.

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}

// parseSize parses a byte count with an optional KiB, MiB, GiB or TiB
// suffix (or K, M, G, T). It checks the syntax only.
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, errors.New("not a size (such as 65536, 64KiB or 2MiB)")
	}
	return n * mult, nil
}

// formatSize prints n with the largest unit that divides it.
func formatSize(n int64) string {
	for _, u := range sizeUnits[:4] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// sizeRange says what range of sizes is wanted, and of what multiple.
func sizeRange(min, max, multiple int64) string {
	s := "want " + formatSize(min) + " to " + formatSize(max)
	if multiple > 1 {
		s += ", a multiple of " + formatSize(multiple)
	}
	return s
}

// sizeValue is a size flag that must be in [min, max] and a multiple of
// multiple when given.
type sizeValue struct {
	p                  *int
	raw                string
	min, max, multiple int64
	err                error
}

// sizeFlag defines a size flag.
func sizeFlag(fs *flag.FlagSet, name string, def, min, max, multiple int, usage string) *int {
	v := &sizeValue{p: new(int), min: int64(min), max: int64(max), multiple: int64(multiple)}
	*v.p = def
	v.raw = strconv.Itoa(def)
	fs.Var(v, name, usage)
	return v.p
}

func (v *sizeValue) Type() string { return "size" }
func (v *sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *sizeValue) Set(s string) error {
	v.raw = s
	n, err := parseSize(s)
	*v.p, v.err = int(n), err
	return nil
}

func (v *sizeValue) check() error {
	if v.err != nil {
		return fmt.Errorf("%w; %s", v.err, sizeRange(v.min, v.max, v.multiple))
	}
	if n := int64(*v.p); n < v.min || n > v.max || v.multiple > 1 && n%v.multiple != 0 {
		return errors.New(sizeRange(v.min, v.max, v.multiple))
	}
	return nil
}
