package cmd

import (
	"bytes"
	"io"
	"testing"
)

func TestUseColor(t *testing.T) {
	tests := []struct {
		name  string
		mode  string
		tty   bool
		env   map[string]string
		color bool
	}{
		{"always on a pipe", "always", false, nil, true},
		{"always with NO_COLOR", "always", false, map[string]string{"NO_COLOR": "1"}, true},
		{"never on a terminal", "never", true, nil, false},
		{"auto on a terminal", "auto", true, nil, true},
		{"auto on a pipe", "auto", false, nil, false},
		{"auto with NO_COLOR", "auto", true, map[string]string{"NO_COLOR": "1"}, false},
		{"auto on a dumb terminal", "auto", true, map[string]string{"TERM": "dumb"}, false},
		{"unknown mode", "sometimes", true, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			tty := func(io.Writer) bool { return tt.tty }
			if got := useColor(tt.mode, &bytes.Buffer{}, getenv, tty); got != tt.color {
				t.Errorf("useColor(%q) = %v, want %v", tt.mode, got, tt.color)
			}
		})
	}
}

// A buffer is never a terminal, whatever the environment says.
func TestIsTerminalBuffer(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Error("isTerminal(buffer) = true")
	}
}

func TestValidateColor(t *testing.T) {
	tests := []struct {
		mode, err string
	}{
		{"auto", ""},
		{"always", ""},
		{"never", ""},
		{"yes", `invalid --color "yes": use auto, always or never`},
		{"", `invalid --color "": use auto, always or never`},
	}
	for _, tt := range tests {
		err := ValidateColor(tt.mode)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.err {
			t.Errorf("ValidateColor(%q) = %q, want %q", tt.mode, got, tt.err)
		}
	}
}
