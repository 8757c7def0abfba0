package mesh

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"
)

// List runs a LIST through client-go's pager: a large cluster-wide list is
// read in chunks (500 objects, the pager's default) and comes back as one
// list of the client's type, as a plain list call would return it. list is
// a typed client's List method, e.g. kube.CoreV1().Pods("").List.
func List[L runtime.Object](ctx context.Context, opts metav1.ListOptions, list func(context.Context, metav1.ListOptions) (L, error)) (L, error) {
	var (
		out   L
		first = true
		items []runtime.Object
	)
	p := pager.New(pager.SimplePageFunc(func(o metav1.ListOptions) (runtime.Object, error) {
		l, err := list(ctx, o)
		if err != nil {
			return nil, err
		}
		if first {
			out, first = l, false
		}
		return l, nil
	}))
	err := p.EachListItem(ctx, opts, func(obj runtime.Object) error {
		items = append(items, obj)
		return nil
	})
	if err == nil {
		err = meta.SetList(out, items)
	}
	if err != nil {
		var zero L
		return zero, err
	}
	if m, err := meta.ListAccessor(out); err == nil {
		m.SetContinue("")
	}
	return out, nil
}
