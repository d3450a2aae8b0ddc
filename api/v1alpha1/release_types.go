package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReleaseSpec names a release: a Pipeline's tag and the one commit it names.
// Conveyor writes it when the tag's first run starts; it never changes, so a
// later run of the tag with another commit is refused ("the tag moved").
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a release's pipeline, tag and commit never change"
type ReleaseSpec struct {
	// pipelineRef names the Pipeline, in the release's namespace.
	// +required
	PipelineRef PipelineReference `json:"pipelineRef"`

	// tag is the git tag.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Tag string `json:"tag"`

	// commit the tag names, as its first run gave it.
	// +required
	// +kubebuilder:validation:MinLength=4
	// +kubebuilder:validation:MaxLength=64
	Commit string `json:"commit"`
}

// Verdict is what the approvers said of a release.
// +kubebuilder:validation:Enum=Pending;Approved;Refused
type Verdict string

const (
	// VerdictPending: no approval stage decided yet.
	VerdictPending Verdict = "Pending"
	// VerdictApproved: an approval stage of a run of the release passed.
	VerdictApproved Verdict = "Approved"
	// VerdictRefused: an approval stage refused it. Final: no run of the tag,
	// or of its commit under another tag, starts again.
	VerdictRefused Verdict = "Refused"
)

// ReleaseDecision is one approval stage's verdict on the release, in one run.
type ReleaseDecision struct {
	// verdict is Approved or Refused.
	Verdict Verdict `json:"verdict"`

	// stage is the approval stage that decided.
	// +kubebuilder:validation:MaxLength=40
	Stage string `json:"stage"`

	// run is the PipelineRun, and runUID its UID.
	// +kubebuilder:validation:MaxLength=253
	Run string `json:"run"`
	// +kubebuilder:validation:MaxLength=128
	RunUID string `json:"runUID"`

	// by are the approvers who decided, as the API server authenticated them.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	By []string `json:"by,omitempty"`

	// comment of the deciding Approval (a refusal's, or the first approver's).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Comment string `json:"comment,omitempty"`

	// time of the decision.
	Time metav1.Time `json:"time"`
}

// ReleaseEnvironment is the last deploy of the release to one environment.
type ReleaseEnvironment struct {
	// name is the environment (its namespace).
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// stage that deployed it.
	// +kubebuilder:validation:MaxLength=40
	Stage string `json:"stage"`

	// run is the PipelineRun that deployed it.
	// +kubebuilder:validation:MaxLength=253
	Run string `json:"run"`

	// triggeredBy is who triggered the deploy, for a manual stage.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	TriggeredBy string `json:"triggeredBy,omitempty"`

	// time the deploy succeeded.
	Time metav1.Time `json:"time"`
}

// ReleaseStatus is the ledger: the verdict, every decision, and the
// environments the release reached.
type ReleaseStatus struct {
	// verdict is Pending until an approval stage decides; Refused is final and
	// outranks any approval.
	// +optional
	Verdict Verdict `json:"verdict,omitempty"`

	// decidedBy is who gave the verdict, comma-separated.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	DecidedBy string `json:"decidedBy,omitempty"`

	// decidedAt is when.
	// +optional
	DecidedAt *metav1.Time `json:"decidedAt,omitempty"`

	// decisions are the approval stages' verdicts, oldest first (the last 32).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Decisions []ReleaseDecision `json:"decisions,omitempty"`

	// environments are the last successful deploy to each environment.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Environments []ReleaseEnvironment `json:"environments,omitempty"`

	// lastEnvironment is the environment reached last.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	LastEnvironment string `json:"lastEnvironment,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=conveyor,shortName=rel
// +kubebuilder:printcolumn:name="Pipeline",type=string,JSONPath=`.spec.pipelineRef.name`
// +kubebuilder:printcolumn:name="Tag",type=string,JSONPath=`.spec.tag`
// +kubebuilder:printcolumn:name="Commit",type=string,JSONPath=`.spec.commit`
// +kubebuilder:printcolumn:name="Verdict",type=string,JSONPath=`.status.verdict`
// +kubebuilder:printcolumn:name="By",type=string,JSONPath=`.status.decidedBy`
// +kubebuilder:printcolumn:name="Reached",type=string,JSONPath=`.status.lastEnvironment`
// +kubebuilder:printcolumn:name="Decided",type=date,JSONPath=`.status.decidedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Release is the ledger of one tag of a Pipeline: the commit it names, the
// approvers' verdict and the environments it reached. Conveyor alone writes
// it (admission refuses anyone else), and it outlives the runs: deleting or
// pruning runs leaves it, and a refusal recorded here refuses every later run
// of the tag, or of its commit.
type Release struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the release.
	// +required
	Spec ReleaseSpec `json:"spec"`

	// status is the ledger.
	// +optional
	Status ReleaseStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ReleaseList is a list of Releases.
type ReleaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Release `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Release{}, &ReleaseList{})
}
