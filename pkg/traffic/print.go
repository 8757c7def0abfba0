package traffic

import (
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"
)

// WriteChanges writes kubectl's "kind.group/name op" lines.
func WriteChanges(w io.Writer, changes []Change, dry DryRun) {
	suffix := ""
	switch dry {
	case DryRunClient:
		suffix = " (dry run)"
	case DryRunServer:
		suffix = " (server dry run)"
	}
	for _, c := range changes {
		fmt.Fprintln(w, c.String()+suffix)
	}
}

// WriteObjects prints one object, or a List of several, like kubectl get.
func WriteObjects(p printers.ResourcePrinter, w io.Writer, objs []*unstructured.Unstructured) error {
	if len(objs) == 1 {
		return p.PrintObj(objs[0], w)
	}
	list := &unstructured.UnstructuredList{Object: map[string]interface{}{"apiVersion": "v1", "kind": "List", "metadata": map[string]interface{}{"resourceVersion": ""}}}
	for _, obj := range objs {
		list.Items = append(list.Items, *obj)
	}
	var out runtime.Object = list
	return p.PrintObj(out, w)
}

// WriteSplit is the split table: a row per route and subset.
func WriteSplit(w io.Writer, rows []Row) error {
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, "ROUTE\tSUBSET\tWEIGHT\tREADY PODS")
	for _, r := range rows {
		weight := "-"
		if r.Weight >= 0 {
			weight = fmt.Sprint(r.Weight)
		}
		pods := "-" // not a version of the service
		if r.Pods >= 0 {
			pods = fmt.Sprintf("%d/%d", r.Ready, r.Pods)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Route, r.Subset, weight, pods)
	}
	return tw.Flush()
}
