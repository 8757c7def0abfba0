package traffic

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
)

// destClass is what split does with one entry of a route's destination
// list (Istio route[] or Gateway API backendRefs[]).
type destClass int

const (
	// classVersion is a version (subset) of the service: it gets its
	// asked weight, or 0 when the split leaves it out.
	classVersion destClass = iota
	// classAll is the service without a subset (all its pods): the
	// versions take over its share, and it leaves the list.
	classAll
	// classKept is anything else (another host, a subset that is no
	// version of the service, another kind of backend): it stays as it is,
	// weight included.
	classKept
)

// destList says how to read and build one kind of destination list.
type destList struct {
	// classify tells an entry's class and, for versions, its subset.
	classify func(e map[string]interface{}) (destClass, string)
	// weight is an entry's weight; n is the length of the list (Istio
	// gives a lone destination 100, Gateway API defaults to 1).
	weight func(e map[string]interface{}, n int) int
	// build makes the entry for an asked subset the list lacks. tmpl is
	// the entry of the whole service it replaces, or nil.
	build func(subset string, weight int, tmpl map[string]interface{}) map[string]interface{}
	// describe names a kept entry for messages.
	describe func(e map[string]interface{}) string
}

// reweight applies weights to a route's destination list. Destinations
// that are not versions of the service keep their weight and their place;
// the asked weights then divide only what went to the service, scaled to
// that share in whole numbers. It refuses when the service has no share,
// or when an asked weight would round to 0. The note (empty when nothing
// was kept) tells the user what was kept and what the weights became.
func (l destList) reweight(old []interface{}, weights []SubsetWeight, route, service string) ([]interface{}, string, error) {
	total, kept := 0, 0
	var keptNames []string
	var tmpl map[string]interface{}
	for _, e := range old {
		d, _ := e.(map[string]interface{})
		w := l.weight(d, len(old))
		total += w
		switch class, _ := l.classify(d); class {
		case classKept:
			kept += w
			keptNames = append(keptNames, fmt.Sprintf("%s (weight %d)", l.describe(d), w))
		case classAll:
			if tmpl == nil {
				tmpl = d
			}
		}
	}
	final := map[string]int{}
	for _, w := range weights {
		final[w.Subset] = w.Weight
	}
	note := ""
	if kept > 0 {
		share := total - kept
		if share <= 0 {
			return nil, "", fmt.Errorf("route %s sends no traffic to service %s: all of it goes to %s; split divides only the service's own share, so give the service a weight in that route by hand (kubectl edit), or choose another route with --route",
				route, service, strings.Join(keptNames, ", "))
		}
		scaled := scale(weights, share)
		var parts []string
		for _, w := range weights {
			if w.Weight > 0 && scaled[w.Subset] == 0 {
				return nil, "", fmt.Errorf("%s=%d cannot be kept: route %s also sends traffic to %s, which stays, so the weights given divide only the %d of %d that goes to service %s, and %d%% of it rounds to 0; give %s more, or change the route by hand (kubectl edit)",
					w.Subset, w.Weight, route, strings.Join(keptNames, ", "), share, total, service, w.Weight, w.Subset)
			}
			parts = append(parts, fmt.Sprintf("%s=%d", w.Subset, scaled[w.Subset]))
		}
		final = scaled
		note = fmt.Sprintf("route %s keeps %s: the weights given divide the %d of %d that goes to service %s (%s)",
			route, strings.Join(keptNames, ", "), share, total, service, strings.Join(parts, ", "))
	}
	var out []interface{}
	done := map[string]bool{}
	for _, e := range old {
		d, _ := e.(map[string]interface{})
		class, subset := l.classify(d)
		switch class {
		case classKept:
			out = append(out, runtime.DeepCopyJSON(d))
		case classVersion:
			// A version left out (or listed twice) stays, with no traffic,
			// so its other fields are not lost.
			n, ok := final[subset]
			if !ok || done[subset] {
				n = 0
			}
			done[subset] = true
			d = runtime.DeepCopyJSON(d)
			d["weight"] = int64(n)
			out = append(out, d)
		}
	}
	for _, w := range weights {
		if !done[w.Subset] {
			out = append(out, l.build(w.Subset, final[w.Subset], tmpl))
		}
	}
	return out, note, nil
}

// scale divides share in proportion to the weights (which add up to 100),
// in whole numbers that add up to share: each gets its rounded-down part,
// and what is left goes to the largest remainders, earlier ones first.
func scale(weights []SubsetWeight, share int) map[string]int {
	out := map[string]int{}
	type rem struct {
		subset string
		r, i   int
	}
	var rems []rem
	left := share
	for i, w := range weights {
		n := w.Weight * share
		out[w.Subset] = n / 100
		left -= n / 100
		rems = append(rems, rem{w.Subset, n % 100, i})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for i := 0; left > 0 && i < len(rems); i++ {
		if rems[i].r == 0 {
			break
		}
		out[rems[i].subset]++
		left--
	}
	return out
}

// istioDests reads an Istio HTTP route's destinations for service svc in
// ns; versions are the subset names that belong to the split.
func istioDests(svc, ns string, versions map[string]bool) destList {
	var host string
	var port interface{}
	return destList{
		classify: func(e map[string]interface{}) (destClass, string) {
			dest, _ := e["destination"].(map[string]interface{})
			h, _ := dest["host"].(string)
			if !hostMatches(h, svc, ns) {
				return classKept, ""
			}
			if host == "" {
				host, port = h, dest["port"]
			}
			subset, _ := dest["subset"].(string)
			switch {
			case subset == "":
				return classAll, ""
			case versions[subset]:
				return classVersion, subset
			}
			return classKept, subset
		},
		weight: func(e map[string]interface{}, n int) int {
			if w, ok := weightOf(e); ok {
				return w
			}
			if n == 1 {
				return 100
			}
			return 0
		},
		build: func(subset string, weight int, tmpl map[string]interface{}) map[string]interface{} {
			if tmpl != nil {
				// Replacing the whole service: each version inherits its
				// entry (port, headers).
				e := runtime.DeepCopyJSON(tmpl)
				dest, _ := e["destination"].(map[string]interface{})
				dest["subset"] = subset
				e["weight"] = int64(weight)
				return e
			}
			h := host
			if h == "" {
				h = svc
			}
			dest := map[string]interface{}{"host": h, "subset": subset}
			if port != nil {
				dest["port"] = runtime.DeepCopyJSONValue(port)
			}
			return map[string]interface{}{"destination": dest, "weight": int64(weight)}
		},
		describe: func(e map[string]interface{}) string {
			dest, _ := e["destination"].(map[string]interface{})
			h, _ := dest["host"].(string)
			if s, _ := dest["subset"].(string); s != "" {
				return fmt.Sprintf("%s subset %s", h, s)
			}
			return h
		},
	}
}

// gatewayDests reads a Gateway API rule's backendRefs for service svc:
// versions are reached through the per-version Services.
func gatewayDests(svc string, port int64, versions map[string]bool) destList {
	refName := func(e map[string]interface{}) string {
		group, _ := e["group"].(string)
		kind, _ := e["kind"].(string)
		if (group != "" && group != "core") || (kind != "" && kind != "Service") {
			return ""
		}
		name, _ := e["name"].(string)
		return name
	}
	return destList{
		classify: func(e map[string]interface{}) (destClass, string) {
			name := refName(e)
			if name == svc {
				return classAll, ""
			}
			if v, ok := strings.CutPrefix(name, svc+"-"); ok && versions[v] {
				return classVersion, v
			}
			return classKept, ""
		},
		weight: func(e map[string]interface{}, _ int) int {
			if w, ok := weightOf(e); ok {
				return w
			}
			return 1 // Gateway API's default
		},
		build: func(subset string, weight int, tmpl map[string]interface{}) map[string]interface{} {
			if tmpl != nil {
				e := runtime.DeepCopyJSON(tmpl)
				e["name"] = versionService(svc, subset)
				e["weight"] = int64(weight)
				return e
			}
			e := map[string]interface{}{"name": versionService(svc, subset), "weight": int64(weight)}
			if port != 0 {
				e["port"] = port
			}
			return e
		},
		describe: func(e map[string]interface{}) string {
			name, _ := e["name"].(string)
			if kind, _ := e["kind"].(string); kind != "" && kind != "Service" {
				return strings.ToLower(kind) + "/" + name
			}
			return "service " + name
		},
	}
}
