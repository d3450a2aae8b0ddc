package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ApprovalDecision is what an Approval says.
// +kubebuilder:validation:Enum=Approve;Reject
type ApprovalDecision string

const (
	// DecisionApprove triggers a manual stage, or counts towards an approval stage.
	DecisionApprove ApprovalDecision = "Approve"
	// DecisionReject refuses an approval stage ("not approve"): the run ends as Rejected.
	DecisionReject ApprovalDecision = "Reject"
)

// PipelineRunReference names a PipelineRun in the Approval's namespace.
type PipelineRunReference struct {
	// name of the PipelineRun.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ApprovalSpec is a person's trigger of a manual stage, or decision on an
// approval stage. It cannot change once created.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="an Approval cannot be changed: create a new one"
// +kubebuilder:validation:XValidation:rule="!has(self.overrideFreeze) || !self.overrideFreeze || (has(self.comment) && size(self.comment) > 0)",message="an Approval that overrides a freeze window needs a comment saying why"
// +kubebuilder:validation:XValidation:rule="!has(self.overrideFreeze) || !self.overrideFreeze || !has(self.decision) || self.decision == 'Approve'",message="overrideFreeze goes with decision Approve"
type ApprovalSpec struct {
	// pipelineRunRef names the run, in the Approval's namespace.
	// +required
	PipelineRunRef PipelineRunReference `json:"pipelineRunRef"`

	// stage is the name of the manual or approval stage.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	Stage string `json:"stage"`

	// decision is Approve (trigger the stage, or approve it) or Reject (refuse an
	// approval stage; not allowed for manual stages).
	// +optional
	// +kubebuilder:default=Approve
	Decision ApprovalDecision `json:"decision,omitempty"`

	// comment says why, for the record.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Comment string `json:"comment,omitempty"`

	// overrideFreeze deploys a Frozen stage during its Environment's freeze
	// window: only members of the Environment's overrideGroups may, and the
	// comment, which says why, is required.
	// +optional
	OverrideFreeze bool `json:"overrideFreeze,omitempty"`

	// approver is who created the Approval, as the API server authenticated
	// them. Conveyor's admission webhook writes it on create; whatever a client
	// puts here is replaced.
	// +optional
	Approver *UserInfo `json:"approver,omitempty"`

	// run is the run as admission found it when the Approval was created.
	// Conveyor's admission webhook writes it on create; whatever a client puts
	// here is replaced. The Approval counts only for that run: a run deleted
	// and created again under its name starts from nothing.
	// +optional
	Run *RecordedRun `json:"run,omitempty"`
}

// RecordedRun is the run an Approval was given for.
type RecordedRun struct {
	// uid of the run.
	// +required
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid"`

	// commit the run builds, when it names one.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Commit string `json:"commit,omitempty"`

	// values are the run's parameters and the results its jobs had written
	// when the Approval was made: what it approves (each value cut at 256
	// characters here; valuesDigest covers them whole).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	Values []ApprovedValue `json:"values,omitempty"`

	// valuesDigest is sha256 over values, whole: a stage counts the Approval
	// only while the run's values have this digest (a rerun whose build wrote
	// another image digest needs a new approval). Empty when the run had none.
	// +optional
	// +kubebuilder:validation:MaxLength=71
	ValuesDigest string `json:"valuesDigest,omitempty"`
}

// ApprovedValue is one value an Approval approves.
type ApprovedValue struct {
	// ref is the value's reference: params.NAME or
	// stages.STAGE.jobs.JOB.results.NAME.
	// +required
	// +kubebuilder:validation:MaxLength=256
	Ref string `json:"ref"`

	// value is the value, cut at 256 characters.
	// +required
	// +kubebuilder:validation:MaxLength=260
	Value string `json:"value"`
}

// UserInfo is a user as the API server authenticated them.
type UserInfo struct {
	// username of the user.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Username string `json:"username,omitempty"`

	// uid of the user.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	UID string `json:"uid,omitempty"`

	// groups the user belonged to at the time.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	Groups []string `json:"groups,omitempty"`
}

// ApprovalStatus reports whether the run took the Approval into account.
type ApprovalStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// settled is true once the verdict can no longer change: the run took the
	// Approval into account and moved past the stage, or the Approval can
	// never count (the run finished, the stage started or does not take it).
	// The manager stops watching settled Approvals (select them with
	// --field-selector status.settled=true).
	// +optional
	Settled bool `json:"settled,omitempty"`

	// conditions: Ready is True once the run took the Approval into account;
	// otherwise its reason says why not.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=conveyor
// +kubebuilder:selectablefield:JSONPath=`.status.settled`
// +kubebuilder:printcolumn:name="Run",type=string,JSONPath=`.spec.pipelineRunRef.name`
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.spec.stage`
// +kubebuilder:printcolumn:name="Decision",type=string,JSONPath=`.spec.decision`
// +kubebuilder:printcolumn:name="Approver",type=string,JSONPath=`.spec.approver.username`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Values",type=string,priority=1,JSONPath=`.spec.run.valuesDigest`

// Approval triggers a manual stage of a PipelineRun, or gives the approve /
// not-approve decision on an approval stage.
type Approval struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the decision.
	// +required
	Spec ApprovalSpec `json:"spec"`

	// status says whether it was taken into account.
	// +optional
	Status ApprovalStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ApprovalList is a list of Approvals.
type ApprovalList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Approval `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Approval{}, &ApprovalList{})
}
