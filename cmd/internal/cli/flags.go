package cli

import (
	"errors"
	"flag"
	"fmt"
)

// FlagError is a command-line mistake: a sample's main prints it (unless
// the flag package already did) and exits with status 2.
type FlagError struct {
	Msg      string
	Reported bool // the flag package already printed the error and usage
}

func (e *FlagError) Error() string { return e.Msg }

// Errorf returns a *FlagError.
func Errorf(format string, args ...any) error {
	return &FlagError{Msg: fmt.Sprintf(format, args...)}
}

// Parse runs fs.Parse and refuses positional arguments; errors are
// *FlagError, or flag.ErrHelp for -h.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &FlagError{Msg: err.Error(), Reported: true}
	}
	if fs.NArg() > 0 {
		return Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
