package sniff

import (
	"os"
	"strings"
	"testing"
)

// TestVerdictsDoc keeps docs/verdicts.md's tables equal to the code's.
func TestVerdictsDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/verdicts.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "```\n"+PolicyText()+"```\n") {
		t.Errorf("docs/verdicts.md does not hold the policy tables as the code prints them; paste the output of PolicyText() (kubectl mesh sniff --help) into its code block:\n%s", PolicyText())
	}
}
