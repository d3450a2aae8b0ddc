// Package v1alpha1 contains the Conveyor API: Pipeline, PipelineRun and Approval.
//
// +kubebuilder:object:generate=true
// +groupName=conveyor.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the Conveyor API.
	GroupVersion = schema.GroupVersion{Group: "conveyor.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Conveyor types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the Conveyor types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
