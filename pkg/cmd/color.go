package cmd

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// ValidateColor checks a --color value.
func ValidateColor(mode string) error {
	switch mode {
	case "auto", "always", "never":
		return nil
	}
	return fmt.Errorf("invalid --color %q: use auto, always or never", mode)
}

// UseColor says whether a command may colour what it writes to w. --color
// always and never are obeyed as given; auto colours only a terminal, and not
// when NO_COLOR is set (https://no-color.org) or TERM is dumb. Pipes, files
// and test buffers are therefore never coloured under auto.
func UseColor(o *options.Options, w io.Writer) bool {
	return useColor(o.Color, w, os.Getenv, isTerminal)
}

func useColor(mode string, w io.Writer, getenv func(string) string, tty func(io.Writer) bool) bool {
	switch mode {
	case "always":
		return true
	case "auto":
		return getenv("NO_COLOR") == "" && getenv("TERM") != "dumb" && tty(w)
	}
	return false
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalSize is w's terminal size, or nil when w is not a terminal.
func terminalSize(w io.Writer) *inject.Terminal {
	if !isTerminal(w) {
		return nil
	}
	width, height, err := term.GetSize(int(w.(*os.File).Fd()))
	if err != nil {
		return nil
	}
	return &inject.Terminal{Width: width, Height: height}
}
