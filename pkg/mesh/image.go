package mesh

import (
	"strings"

	"github.com/distribution/reference"
	appsv1 "k8s.io/api/apps/v1"
)

// imageVariants are the suffixes Istio's global.variant adds to a tag: the
// image differs, the Istio version does not.
var imageVariants = []string{"-distroless", "-debug"}

// ImageVersion is the Istio version an image reference runs: its tag
// without an image variant, so docker.io/istio/pilot:1.31.0-distroless is
// 1.31.0. It is "" (unknown) when the reference has no tag (a bare name or
// only a digest), when the tag is "latest", or when it does not parse. A
// reference with both a tag and a digest says its version in the tag.
func ImageVersion(image string) string {
	named, err := reference.ParseNormalizedNamed(strings.TrimSpace(image))
	if err != nil {
		return ""
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return ""
	}
	return TagVersion(tagged.Tag())
}

// TagVersion is the Istio version an image tag names (as in the injector's
// global.tag): the tag without an image variant, "" for "latest" or "".
func TagVersion(tag string) string {
	for _, v := range imageVariants {
		tag = strings.TrimSuffix(tag, v)
	}
	if tag == "latest" {
		return ""
	}
	return tag
}

// IstiodVersion is the Istio version of an istiod Deployment, from the
// image of its discovery container ("" when unknown).
func IstiodVersion(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == IstiodContainer {
			return ImageVersion(c.Image)
		}
	}
	return ""
}
