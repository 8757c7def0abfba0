package mesh

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubectl/pkg/util/podutils"
)

// PodReady says whether the pod's Ready condition is True, as kubectl
// judges it.
func PodReady(pod *corev1.Pod) bool { return podutils.IsPodReady(pod) }

// PodLive says whether the pod counts as a current replica: not being
// deleted and not finished.
func PodLive(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}
