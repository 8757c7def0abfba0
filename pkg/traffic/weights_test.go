package traffic

import (
	"reflect"
	"testing"
)

func TestParseWeights(t *testing.T) {
	tests := []struct {
		in      string
		ordered []int
		named   []SubsetWeight
		err     string
	}{
		{in: "50/50", ordered: []int{50, 50}},
		{in: "100", ordered: []int{100}},
		{in: "100/0", ordered: []int{100, 0}},
		{in: "20/30/50", ordered: []int{20, 30, 50}},
		{in: " 50 / 50 ", ordered: []int{50, 50}},
		{in: "v1=80,v2=20", named: []SubsetWeight{{"v1", 80}, {"v2", 20}}},
		{in: "canary=100", named: []SubsetWeight{{"canary", 100}}},
		{in: "v2=0,v1=100", named: []SubsetWeight{{"v2", 0}, {"v1", 100}}},
		{in: "60/60", err: `invalid weights "60/60": weights must add up to 100, got 120`},
		{in: "-5/105", err: `invalid weights "-5/105": weight -5 is out of range; weights are whole numbers 0-100`},
		{in: "105/-5", err: `invalid weights "105/-5": weight 105 is out of range; weights are whole numbers 0-100`},
		{in: "a/b", err: `invalid weights "a/b": "a" is not a whole number; weights are whole numbers 0-100`},
		{in: "v1=50", err: `invalid weights "v1=50": weights must add up to 100, got 50`},
		{in: "50/", err: `invalid weights "50/": empty weight; weights are whole numbers 0-100`},
		{in: "", err: `invalid weights "": empty weight; weights are whole numbers 0-100`},
		{in: "50.5/49.5", err: `invalid weights "50.5/49.5": "50.5" is not a whole number; weights are whole numbers 0-100`},
		{in: "v1=50,v1=50", err: `invalid weights "v1=50,v1=50": subset v1 is given twice`},
		{in: "v1=50,v2", err: `invalid weights "v1=50,v2": "v2" is not SUBSET=WEIGHT; write weights as v1=80,v2=20`},
		{in: "V1=100", err: `invalid weights "V1=100": subset name "V1" is invalid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{in: "=100", err: `invalid weights "=100": empty subset name`},
		{in: "v1=x", err: `invalid weights "v1=x": subset v1: "x" is not a whole number; weights are whole numbers 0-100`},
		{in: "99999999999999999999/0", err: `invalid weights "99999999999999999999/0": "99999999999999999999" is not a whole number; weights are whole numbers 0-100`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := ParseWeights(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(w.Ordered, tt.ordered) || !reflect.DeepEqual(w.Named, tt.named) {
				t.Fatalf("got ordered %v named %v, want %v %v", w.Ordered, w.Named, tt.ordered, tt.named)
			}
		})
	}
}

func TestNamedWeightsAndFlagValues(t *testing.T) {
	tests := []struct {
		name  string
		flags [][2]string
		want  []SubsetWeight
		err   string
	}{
		{name: "ok", flags: [][2]string{{"v1", "50"}, {"v2", "50"}}, want: []SubsetWeight{{"v1", 50}, {"v2", 50}}},
		{name: "sum", flags: [][2]string{{"v1", "50"}}, err: `invalid weights "--v1 50": weights must add up to 100, got 50`},
		{name: "not a number", flags: [][2]string{{"dryrun", "client"}}, err: `invalid weight for --dryrun: "client" is not a whole number; weights are whole numbers 0-100 (if --dryrun is not a subset, it is an unknown flag)`},
		{name: "negative", flags: [][2]string{{"v1", "-5"}}, err: `invalid weight for --v1: weight -5 is out of range; weights are whole numbers 0-100 (if --v1 is not a subset, it is an unknown flag)`},
		{name: "twice", flags: [][2]string{{"v1", "50"}, {"v1", "50"}}, err: `invalid weights "--v1 50 --v1 50": subset v1 is given twice`},
		{name: "bad name", flags: [][2]string{{"v_1", "100"}}, err: `invalid weights "--v_1 100": subset name "v_1" is invalid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sws []SubsetWeight
			var err error
			for _, f := range tt.flags {
				var sw SubsetWeight
				if sw, err = ParseWeightValue(f[0], f[1]); err != nil {
					break
				}
				sws = append(sws, sw)
			}
			var w *Weights
			if err == nil {
				w, err = NamedWeights(sws)
			}
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(w.Named, tt.want) {
				t.Fatalf("got %v, want %v", w.Named, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		in      string
		subsets []string
		want    []SubsetWeight
		err     string
	}{
		{in: "50/50", subsets: []string{"v1", "v2"}, want: []SubsetWeight{{"v1", 50}, {"v2", 50}}},
		{in: "10/90", subsets: []string{"v2", "v10"}, want: []SubsetWeight{{"v2", 10}, {"v10", 90}}},
		{in: "v3=100", subsets: []string{"v1"}, want: []SubsetWeight{{"v3", 100}}},
		{in: "50/50", subsets: []string{"v1", "v2", "v3"}, err: `invalid weights "50/50": 2 weights for 3 subsets (v1, v2, v3, in version order); give one weight per subset or name them, e.g. v1=100,v2=0,v3=0`},
		{in: "50/50", subsets: nil, err: `invalid weights "50/50": 2 weights for 0 subsets (, in version order); give one weight per subset or name them, e.g. v1=100`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := ParseWeights(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.Resolve(tt.subsets)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	in := []string{"v10", "v2", "v1", "canary", "v1.10", "v1.9", "1", "01"}
	sortVersions(in)
	want := []string{"1", "01", "canary", "v1", "v1.9", "v1.10", "v2", "v10"}
	if !reflect.DeepEqual(in, want) {
		t.Fatalf("got %v, want %v", in, want)
	}
}

// FuzzParseWeights checks that any input either fails cleanly or yields a
// split Istio accepts: weights 0-100 adding up to 100, valid unique names.
func FuzzParseWeights(f *testing.F) {
	for _, s := range []string{"50/50", "100", "v1=80,v2=20", "60/60", "-5/105", "a/b", "v1=50", "", "/", "=", ",", "v1=50,v1=50", "0/0/100", "1e2", "0x64", "+100", "٣/97"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWeights(s)
		if err != nil {
			if w != nil {
				t.Fatalf("weights %v returned with error %v", w, err)
			}
			return
		}
		if len(w.Named) > 0 == (len(w.Ordered) > 0) {
			t.Fatalf("%q: exactly one of Named and Ordered must be set: %+v", s, w)
		}
		sum := 0
		seen := map[string]bool{}
		for _, n := range w.Ordered {
			if n < 0 || n > 100 {
				t.Fatalf("%q: weight %d out of range", s, n)
			}
			sum += n
		}
		for _, n := range w.Named {
			if n.Weight < 0 || n.Weight > 100 || seen[n.Subset] || n.Subset == "" {
				t.Fatalf("%q: bad entry %+v", s, n)
			}
			seen[n.Subset] = true
			sum += n.Weight
		}
		if sum != 100 {
			t.Fatalf("%q: sum %d", s, sum)
		}
		subsets := make([]string, len(w.Ordered))
		for i := range subsets {
			subsets[i] = "v" + string(rune('a'+i%26))
		}
		if _, err := w.Resolve(subsets); len(w.Ordered) > 0 && err != nil {
			t.Fatalf("%q: resolve: %v", s, err)
		}
	})
}
