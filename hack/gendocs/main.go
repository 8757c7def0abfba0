// Command gendocs writes the command reference, one Markdown page per
// command, from the cobra command tree: `make docs` runs it into
// docs/reference and `make check-docs` fails when the committed pages differ.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/util/homedir"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/cmd"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

func main() {
	dir := flag.String("dir", "docs/reference", "directory to write the pages to; its old .md files are replaced")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	root := cmd.NewCmdMesh(options.New(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: io.Discard, ErrOut: io.Discard}))
	prepare(root, homedir.HomeDir())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Pages of removed commands must go too.
	old, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	return doc.GenMarkdownTree(root, dir)
}

// prepare makes the pages the same on every machine and every day: no
// "generated on" date, and defaults under the home directory (kubectl's
// --cache-dir) written as $HOME.
func prepare(c *cobra.Command, home string) {
	c.DisableAutoGenTag = true
	fix := func(f *pflag.Flag) {
		if home != "" && strings.HasPrefix(f.DefValue, home) {
			f.DefValue = "$HOME" + strings.TrimPrefix(f.DefValue, home)
		}
	}
	c.LocalFlags().VisitAll(fix)
	c.PersistentFlags().VisitAll(fix)
	for _, sub := range c.Commands() {
		prepare(sub, home)
	}
}
