package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PipelineSelector says which Pipelines may deploy to an Environment: those
// in a namespace the selector matches, or named in names.
// +kubebuilder:validation:XValidation:rule="has(self.namespaceSelector) || (has(self.names) && size(self.names) > 0)",message="pipelines must give a namespaceSelector or names (an empty namespaceSelector, {}, lets every namespace's Pipelines deploy)"
type PipelineSelector struct {
	// namespaceSelector selects the namespaces whose Pipelines may deploy
	// here, by the namespaces' labels (which namespace owners cannot set
	// themselves). {} selects every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// names are "namespace/name" patterns (Go path.Match syntax, e.g.
	// "shop-ci/*") of the Pipelines that may deploy here.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Pattern=`^[^/]+/[^/]+$`
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Names []string `json:"names,omitempty"`
}

// EnvironmentApproval is the approval an Environment requires before a deploy
// enters it, whatever the Pipeline says: an approval stage before the deploy
// stage whose groups are among these groups, passed by at least `required`
// distinct approvers.
type EnvironmentApproval struct {
	// groups whose members' approvals count.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Groups []string `json:"groups"`

	// required is how many distinct approvers.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Required int32 `json:"required,omitempty"`

	// allowRunRequester lets a run's requester (or pusher) approve their own
	// deploy here. Off by default: separation of duties.
	// +optional
	AllowRunRequester bool `json:"allowRunRequester,omitempty"`
}

// FreezeWindow is a time when no deploy enters an Environment: recurring
// (schedule, duration, timeZone: a CronJob's schedule, read the way
// Kubernetes reads a CronJob's) or one-off (start, end).
// +kubebuilder:validation:XValidation:rule="has(self.schedule) != has(self.start)",message="a freeze window is recurring (schedule and duration) or one-off (start and end), not both"
// +kubebuilder:validation:XValidation:rule="has(self.schedule) == has(self.duration)",message="a recurring freeze window needs both schedule and duration"
// +kubebuilder:validation:XValidation:rule="has(self.start) == has(self.end)",message="a one-off freeze window needs both start and end"
// +kubebuilder:validation:XValidation:rule="!has(self.timeZone) || has(self.schedule)",message="timeZone is for recurring windows; start and end carry their own offset"
// +kubebuilder:validation:XValidation:rule="!has(self.duration) || duration(self.duration) >= duration('1m')",message="a freeze window's duration must be at least 1m"
// +kubebuilder:validation:XValidation:rule="!has(self.start) || timestamp(self.end) > timestamp(self.start)",message="a freeze window's end must be after its start"
type FreezeWindow struct {
	// name identifies the window in messages and Events.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// reason says why deploys wait, for the people who wait.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason,omitempty"`

	// schedule is when a recurring window opens, in cron format (five
	// fields, or a macro such as @daily), as a CronJob's schedule.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Schedule string `json:"schedule,omitempty"`

	// duration is how long a recurring window stays open.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`

	// timeZone is the IANA time zone the schedule is read in (e.g.
	// "Europe/Berlin"); UTC when unset.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	TimeZone string `json:"timeZone,omitempty"`

	// start and end bound a one-off window.
	// +optional
	Start *metav1.Time `json:"start,omitempty"`
	// +optional
	End *metav1.Time `json:"end,omitempty"`
}

// EnvironmentSpec is an environment's policy: who may deploy there, from
// which Pipelines, after what, and when not.
type EnvironmentSpec struct {
	// namespace is where the deploy stages of this environment run: a stage
	// whose `environment` is this namespace deploys here. A stage may deploy
	// only to a namespace an Environment names.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="an Environment's namespace cannot change: create another Environment"
	Namespace string `json:"namespace"`

	// pipelines are the Pipelines that may deploy here.
	// +required
	Pipelines PipelineSelector `json:"pipelines"`

	// triggerGroups are the groups whose members may trigger a deploy here.
	// A stage's triggerGroups may narrow them, never widen them.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	TriggerGroups []string `json:"triggerGroups"`

	// allowAuto lets a stage with `when: auto` deploy here, with no person
	// triggering it. Off by default.
	// +optional
	AllowAuto bool `json:"allowAuto,omitempty"`

	// requires are the Environments (by name) where the same commit must
	// have been deployed successfully before it deploys here, by this run
	// or an earlier one (production after pre-production).
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Requires []string `json:"requires,omitempty"`

	// approval is the approval a deploy needs before it enters, even when
	// its Pipeline forgets to ask for one.
	// +optional
	Approval *EnvironmentApproval `json:"approval,omitempty"`

	// serviceAccounts are the ServiceAccounts of the namespace that jobs
	// may run as; only "default" when empty. Jobs here always run with the
	// Pod Security restricted profile's settings.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`

	// freezeWindows are times when no deploy enters: a deploy stage ready
	// during one waits as Frozen until it closes.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	FreezeWindows []FreezeWindow `json:"freezeWindows,omitempty"`

	// overrideGroups are the groups whose members may deploy during a freeze
	// window, with an Approval that sets overrideFreeze and says why.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	OverrideGroups []string `json:"overrideGroups,omitempty"`

	// mounts are the Secrets and ConfigMaps of the namespace that deploy jobs
	// may mount (volumes, projected sources) or pull images with: none when
	// empty. A Pipeline may not reach into the environment's other Secrets.
	// +optional
	Mounts *EnvironmentMounts `json:"mounts,omitempty"`
}

// EnvironmentMounts lists what deploy jobs may mount in an environment.
type EnvironmentMounts struct {
	// secrets are Secret names.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Secrets []string `json:"secrets,omitempty"`

	// configMaps are ConfigMap names.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	ConfigMaps []string `json:"configMaps,omitempty"`
}

// Deploy is one successful deploy to an Environment.
type Deploy struct {
	// pipeline is the Pipeline ("namespace/name"), run the PipelineRun
	// ("namespace/name") and stage its deploy stage. (317: a namespace's 63
	// characters, the slash, a name's 253.)
	// +kubebuilder:validation:MaxLength=317
	Pipeline string `json:"pipeline"`
	// +kubebuilder:validation:MaxLength=317
	Run string `json:"run"`
	// +kubebuilder:validation:MaxLength=128
	RunUID string `json:"runUID"`
	// +kubebuilder:validation:MaxLength=40
	Stage string `json:"stage"`

	// ref is the run's ref ("tag v1.4.0"), release its tag when a tag run.
	// +optional
	// +kubebuilder:validation:MaxLength=300
	Ref string `json:"ref,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Release string `json:"release,omitempty"`

	// commit deployed.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Commit string `json:"commit,omitempty"`

	// by is who triggered the deploy (the requester when it started by itself).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	By string `json:"by,omitempty"`

	// at is when the deploy stage succeeded.
	At metav1.Time `json:"at"`
}

// EnvironmentStatus is what Conveyor observed of an environment.
type EnvironmentStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is False when the policy cannot be read (a schedule
	// or time zone that does not parse, two Environments for one namespace):
	// deploys there are then blocked.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// holder is the run ("namespace/name") that holds the environment's
	// lock, holderStage its stage, holderUID the run's UID and heldSince
	// when it took the lock: one deploy at a time runs here, the holder's.
	// The holder deploys now, or is queued and was handed the lock when the
	// deploy before it ended, or (after a crash or a delete) has ended,
	// which lets the next run take the lock. Empty when nobody holds it.
	// Conveyor's managers write these fields with optimistic concurrency,
	// so one run takes the lock, across shards.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	Holder string `json:"holder,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=40
	HolderStage string `json:"holderStage,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=128
	HolderUID string `json:"holderUID,omitempty"`
	// +optional
	HeldSince *metav1.Time `json:"heldSince,omitempty"`

	// frozen names the freeze window deploys wait for now ("" when none),
	// and frozenUntil when it closes.
	// +optional
	Frozen string `json:"frozen,omitempty"`
	// +optional
	FrozenUntil *metav1.Time `json:"frozenUntil,omitempty"`

	// lastDeploy is the latest successful deploy.
	// +optional
	LastDeploy *Deploy `json:"lastDeploy,omitempty"`

	// deploys are the latest successful deploys, newest first: at most 10
	// (the schema allows the 100 that records written before 2026-12-04
	// kept; the next deploy recorded trims them).
	// +optional
	// +kubebuilder:validation:MaxItems=100
	// +listType=atomic
	Deploys []Deploy `json:"deploys,omitempty"`

	// deployedCommits are the commits deployed here successfully, newest
	// first, each once (at most 100): the record `requires` is checked
	// against. (Kept apart from deploys: every write of the environment's
	// lock carries the whole status through the API server.)
	// +optional
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=64
	// +listType=atomic
	DeployedCommits []string `json:"deployedCommits,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=env,categories=conveyor
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Holder",type=string,JSONPath=`.status.holder`
// +kubebuilder:printcolumn:name="Frozen",type=string,JSONPath=`.status.frozen`
// +kubebuilder:printcolumn:name="Until",type=date,JSONPath=`.status.frozenUntil`
// +kubebuilder:printcolumn:name="Release",type=string,JSONPath=`.status.lastDeploy.release`
// +kubebuilder:printcolumn:name="Commit",type=string,JSONPath=`.status.lastDeploy.commit`
// +kubebuilder:printcolumn:name="Deployed",type=date,JSONPath=`.status.lastDeploy.at`
// +kubebuilder:printcolumn:name="By",type=string,JSONPath=`.status.lastDeploy.by`
// +kubebuilder:printcolumn:name="Run",type=string,priority=1,JSONPath=`.status.lastDeploy.run`

// Environment is a deploy target (a namespace) and its policy, owned by the
// platform's admins: deploy stages obey it whatever their Pipeline says.
type Environment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the environment's policy.
	// +required
	Spec EnvironmentSpec `json:"spec"`

	// status is what Conveyor observed.
	// +optional
	Status EnvironmentStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// EnvironmentList is a list of Environments.
type EnvironmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Environment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Environment{}, &EnvironmentList{})
}
