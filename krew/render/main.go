// Command render fills in the krew manifest template (krew/mesh.yaml) for a
// release: the tag, and the URI and sha256 of each archive, with the sha256
// taken from goreleaser's checksums.txt. The template syntax is
// krew-release-bot's, so the same file can be published by it.
//
//	go run ./krew/render -tag v0.1.0 -checksums dist/checksums.txt krew/mesh.yaml > mesh.yaml
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"text/template"
)

func main() {
	tag := flag.String("tag", "", "release tag, e.g. v0.1.0 (required)")
	checksums := flag.String("checksums", "", "goreleaser's checksums.txt (required unless -placeholder-sha)")
	placeholder := flag.Bool("placeholder-sha", false, "use a dummy sha256 for archives missing from -checksums (for validating the manifest without a full release build)")
	out := flag.String("o", "-", "output file")
	flag.Parse()
	if err := run(*tag, *checksums, *placeholder, flag.Args(), *out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(tag, checksumsFile string, placeholder bool, args []string, out string) error {
	if tag == "" || len(args) != 1 {
		return errors.New("usage: render -tag TAG [-checksums FILE] [-placeholder-sha] [-o FILE] TEMPLATE")
	}
	sums := map[string]string{}
	if checksumsFile != "" {
		f, err := os.Open(checksumsFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if sums, err = parseChecksums(f); err != nil {
			return fmt.Errorf("%s: %w", checksumsFile, err)
		}
	} else if !placeholder {
		return errors.New("give -checksums (or -placeholder-sha to validate the manifest's shape only)")
	}
	tmpl, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	manifest, err := render(string(tmpl), tag, sums, placeholder)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if out == "-" {
		_, err = os.Stdout.Write(manifest)
		return err
	}
	return os.WriteFile(out, manifest, 0o644)
}

// placeholderSHA is what -placeholder-sha puts where no archive was built:
// the sha256 of empty input, well-formed and recognisably not an archive's.
// (All zeros would not do: YAML reads it as the number 0.)
const placeholderSHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// render executes the template. addURIAndSha "URL" TAG expands the URL (it
// may use {{ .TagName }}) and returns the uri and sha256 lines of one
// platform, as krew-release-bot does.
func render(tmpl, tag string, sums map[string]string, placeholder bool) ([]byte, error) {
	data := struct{ TagName string }{tag}
	funcs := template.FuncMap{
		"addURIAndSha": func(rawURL, tag string) (string, error) {
			u, err := expand(rawURL, struct{ TagName string }{tag})
			if err != nil {
				return "", err
			}
			sum, ok := sums[path.Base(u)]
			if !ok {
				if !placeholder {
					return "", fmt.Errorf("no checksum for %s", path.Base(u))
				}
				sum = placeholderSHA
			}
			return fmt.Sprintf("uri: %s\n    sha256: %s", u, sum), nil
		},
	}
	t, err := template.New("manifest").Funcs(funcs).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func expand(s string, data any) (string, error) {
	t, err := template.New("uri").Option("missingkey=error").Parse(s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// parseChecksums reads sha256sum's format, which goreleaser writes:
// "<hex digest>  <file name>" per line.
func parseChecksums(r io.Reader) (map[string]string, error) {
	sums := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 || len(fields[0]) != 64 || strings.Trim(strings.ToLower(fields[0]), "0123456789abcdef") != "" {
			return nil, fmt.Errorf("line %d: want \"<sha256>  <file>\", got %q", n, line)
		}
		sums[strings.TrimPrefix(fields[1], "*")] = strings.ToLower(fields[0])
	}
	return sums, sc.Err()
}
