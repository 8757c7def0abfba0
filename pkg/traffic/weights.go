package traffic

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Weights is a requested split. Either Ordered is set (`50/50`: weights for
// the subsets in version order) or Named is (`v1=80,v2=20`, `--v1 80 --v2 20`).
type Weights struct {
	Ordered []int
	Named   []SubsetWeight
	// Source is what the user typed, for error messages.
	Source string
}

// SubsetWeight is one subset's share of the traffic, in percent.
type SubsetWeight struct {
	Subset string `json:"subset"`
	Weight int    `json:"weight"`
}

// ParseWeights parses the WEIGHTS argument: `50/50`, `100` or `v1=80,v2=20`.
// Weights are whole numbers 0–100 that add up to 100; the Istio CRD schema
// would accept `weight: -5`, so this is the only place that catches it.
func ParseWeights(s string) (*Weights, error) {
	w := &Weights{Source: s}
	if strings.Contains(s, "=") {
		for _, part := range strings.Split(s, ",") {
			name, val, ok := strings.Cut(part, "=")
			if !ok {
				return nil, fmt.Errorf("invalid weights %q: %q is not SUBSET=WEIGHT; write weights as v1=80,v2=20", s, part)
			}
			n, err := parseWeight(val)
			if err != nil {
				return nil, fmt.Errorf("invalid weights %q: subset %s: %w", s, name, err)
			}
			w.Named = append(w.Named, SubsetWeight{Subset: name, Weight: n})
		}
	} else {
		for _, part := range strings.Split(s, "/") {
			n, err := parseWeight(part)
			if err != nil {
				return nil, fmt.Errorf("invalid weights %q: %w", s, err)
			}
			w.Ordered = append(w.Ordered, n)
		}
	}
	if err := w.validate(); err != nil {
		return nil, fmt.Errorf("invalid weights %q: %w", s, err)
	}
	return w, nil
}

// NamedWeights builds Weights from `--SUBSET N` flags (already split into
// names and values, in the order given).
func NamedWeights(flags []SubsetWeight) (*Weights, error) {
	parts := make([]string, len(flags))
	for i, f := range flags {
		parts[i] = fmt.Sprintf("--%s %d", f.Subset, f.Weight)
	}
	w := &Weights{Named: flags, Source: strings.Join(parts, " ")}
	if err := w.validate(); err != nil {
		return nil, fmt.Errorf("invalid weights %q: %w", w.Source, err)
	}
	return w, nil
}

// ParseWeightValue parses one weight given as a flag value (`--v1 50`).
func ParseWeightValue(subset, val string) (SubsetWeight, error) {
	n, err := parseWeight(val)
	if err != nil {
		return SubsetWeight{}, fmt.Errorf("invalid weight for --%s: %w (if --%s is not a subset, it is an unknown flag)", subset, err, subset)
	}
	return SubsetWeight{Subset: subset, Weight: n}, nil
}

func parseWeight(s string) (int, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty weight; weights are whole numbers 0-100")
	}
	n, err := strconv.Atoi(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number; weights are whole numbers 0-100", s)
	}
	if n < 0 || n > 100 {
		return 0, fmt.Errorf("weight %d is out of range; weights are whole numbers 0-100", n)
	}
	return n, nil
}

func (w *Weights) validate() error {
	sum := 0
	seen := map[string]bool{}
	for _, n := range w.Named {
		if n.Subset == "" {
			return fmt.Errorf("empty subset name")
		}
		// Istio requires subset names to be DNS-1123 labels.
		if errs := validation.IsDNS1123Label(n.Subset); len(errs) > 0 {
			return fmt.Errorf("subset name %q is invalid: %s", n.Subset, errs[0])
		}
		if seen[n.Subset] {
			return fmt.Errorf("subset %s is given twice", n.Subset)
		}
		seen[n.Subset] = true
		if n.Weight < 0 || n.Weight > 100 {
			return fmt.Errorf("weight %d is out of range; weights are whole numbers 0-100", n.Weight)
		}
		sum += n.Weight
	}
	for _, n := range w.Ordered {
		if n < 0 || n > 100 {
			return fmt.Errorf("weight %d is out of range; weights are whole numbers 0-100", n)
		}
		sum += n
	}
	if len(w.Named) == 0 && len(w.Ordered) == 0 {
		return fmt.Errorf("no weights given")
	}
	if sum != 100 {
		return fmt.Errorf("weights must add up to 100, got %d", sum)
	}
	return nil
}

// Resolve maps the weights onto the service's subsets, given in version
// order; named weights are returned as they are.
func (w *Weights) Resolve(subsets []string) ([]SubsetWeight, error) {
	if len(w.Named) > 0 {
		return append([]SubsetWeight(nil), w.Named...), nil
	}
	if len(w.Ordered) != len(subsets) {
		return nil, fmt.Errorf("invalid weights %q: %s for %s (%s, in version order); give one weight per subset or name them, e.g. %s",
			w.Source, plural(len(w.Ordered), "weight"), plural(len(subsets), "subset"), strings.Join(subsets, ", "), example(subsets))
	}
	out := make([]SubsetWeight, len(subsets))
	for i, s := range subsets {
		out[i] = SubsetWeight{Subset: s, Weight: w.Ordered[i]}
	}
	return out, nil
}

func example(subsets []string) string {
	if len(subsets) == 0 {
		return "v1=100"
	}
	parts := []string{subsets[0] + "=100"}
	for _, s := range subsets[1:] {
		parts = append(parts, s+"=0")
	}
	return strings.Join(parts, ",")
}

// plural is "1 subset", "2 subsets".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
