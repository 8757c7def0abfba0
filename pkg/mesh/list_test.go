package mesh

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestListPages: List follows continue tokens and returns every item in
// one list of the client's type.
func TestListPages(t *testing.T) {
	var calls []string
	page := func(_ context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
		calls = append(calls, fmt.Sprintf("limit=%d continue=%q selector=%q", o.Limit, o.Continue, o.LabelSelector))
		l := &corev1.PodList{}
		switch o.Continue {
		case "":
			l.Items = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, {ObjectMeta: metav1.ObjectMeta{Name: "b"}}}
			l.Continue = "next"
		case "next":
			l.Items = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "c"}}}
		}
		return l, nil
	}
	l, err := List(context.Background(), metav1.ListOptions{LabelSelector: "app=x"}, page)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range l.Items {
		names = append(names, p.Name)
	}
	want := `[limit=500 continue="" selector="app=x" limit=500 continue="next" selector="app=x"] [a b c]`
	if got := fmt.Sprint(calls, names); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := List(context.Background(), metav1.ListOptions{}, func(context.Context, metav1.ListOptions) (*corev1.PodList, error) {
		return nil, fmt.Errorf("boom")
	}); err == nil || err.Error() != "boom" {
		t.Errorf("err = %v, want boom", err)
	}
}
