package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StageWhen says how a stage starts.
// +kubebuilder:validation:Enum=auto;manual
type StageWhen string

const (
	// WhenAuto stages start by themselves once every stage before them succeeded.
	WhenAuto StageWhen = "auto"
	// WhenManual stages wait until a person in the stage's triggerGroups creates an
	// Approval with decision Approve for them.
	WhenManual StageWhen = "manual"
)

// StageRefs says which runs a stage belongs to.
// +kubebuilder:validation:Enum=all;branches;tags
type StageRefs string

const (
	// RefsAll stages run in branch and tag runs.
	RefsAll StageRefs = "all"
	// RefsBranches stages run in branch runs only.
	RefsBranches StageRefs = "branches"
	// RefsTags stages run in tag runs only (the seed's approve and production).
	RefsTags StageRefs = "tags"
)

// PipelineRefs lists the git refs a Pipeline runs for.
// +kubebuilder:validation:XValidation:rule="(has(self.branches) && size(self.branches) > 0) || (has(self.tags) && size(self.tags) > 0)",message="refs must list at least one branch or tag pattern"
type PipelineRefs struct {
	// branches are glob patterns (Go path.Match syntax, e.g. "feature_*") of the
	// branches that may run this Pipeline.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	// +listType=set
	Branches []string `json:"branches,omitempty"`

	// tags are glob patterns (Go path.Match syntax, e.g. "v*") of the tags that
	// may run this Pipeline.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	// +listType=set
	Tags []string `json:"tags,omitempty"`

	// tagGroups are the groups whose members may start a tag run with kubectl
	// (a tag is a release: in the seed, release engineers create them). Empty:
	// anyone who may create runs. Runs the push receiver starts for pushed tags
	// rely on the git server's own protected-tag rules.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	TagGroups []string `json:"tagGroups,omitempty"`
}

// ApprovalGate makes a stage a decision point: it has no Jobs and passes once
// enough people from the named groups approve; one refusal stops the run.
type ApprovalGate struct {
	// groups are the Kubernetes groups whose members may approve or reject.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	Groups []string `json:"groups"`

	// required is how many Approvals with decision Approve, from distinct
	// approvers, the stage needs.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	Required int32 `json:"required,omitempty"`

	// allowRunRequester lets the person who created a run approve that run's
	// gate. Off by default: separation of duties.
	// +optional
	AllowRunRequester bool `json:"allowRunRequester,omitempty"`

	// carryOverToReruns lets a rerun (spec.rerunOf) reuse the decision this
	// stage took in the run it reruns. Off by default: a rerun asks again.
	// +optional
	CarryOverToReruns bool `json:"carryOverToReruns,omitempty"`
}

// PodMetadata is the metadata added to the pods of a job.
type PodMetadata struct {
	// labels are added to the pod's labels.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are added to the pod's annotations.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// JobSpec describes one job of a stage: one container run to completion as a
// batch/v1 Job.
// +kubebuilder:validation:XValidation:rule="!has(self.env) || self.env.all(e, !e.name.startsWith('CONVEYOR_'))",message="env may not set CONVEYOR_* variables: Conveyor sets them"
type JobSpec struct {
	// name identifies the job within its stage; it is part of the Job's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// image is the container image the job runs.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`

	// command is the entrypoint; the image's entrypoint when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Command []string `json:"command,omitempty"`

	// args are the arguments to the entrypoint.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +listType=atomic
	Args []string `json:"args,omitempty"`

	// workingDir is the container's working directory.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	WorkingDir string `json:"workingDir,omitempty"`

	// env are environment variables added after the CONVEYOR_* variables every
	// job receives.
	// +optional
	// +kubebuilder:validation:MaxItems=128
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`

	// resources are the container's resource requests and limits.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// serviceAccountName is the ServiceAccount the pod runs as, in the namespace
	// the Job runs in.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// podMetadata are labels and annotations added to the job's pod.
	// +optional
	PodMetadata *PodMetadata `json:"podMetadata,omitempty"`

	// nodeSelector constrains the nodes the pod may run on.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let the pod run on tainted nodes.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// securityContext is the pod's security context.
	// +optional
	SecurityContext *corev1.PodSecurityContext `json:"securityContext,omitempty"`

	// timeout is how long the job may run, all attempts together (the Job's
	// activeDeadlineSeconds); past it the job fails with reason DeadlineExceeded.
	// No limit when unset.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// retries is how many times a failed pod is replaced before the job fails
	// (the Job's backoffLimit, with its exponential back-off); 0 by default.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Retries *int32 `json:"retries,omitempty"`

	// volumes are the job's pod's volumes: Secrets, ConfigMaps, projected
	// volumes and emptyDirs anywhere, PersistentVolumeClaims only in the
	// run's own namespace. A job of a stage with an environment mounts only
	// the Secrets and ConfigMaps its Environment's mounts list: they are
	// objects of the environment's namespace, where its pod runs.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	Volumes []JobVolume `json:"volumes,omitempty"`

	// volumeMounts mount the volumes into the job's container.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// imagePullSecrets name Secrets of the namespace the job runs in to pull
	// its image with (in an environment: Secrets its Environment's mounts list).
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// results are small named values the job writes for later stages (an
	// image digest): lines NAME=VALUE in the file named by the environment
	// variable CONVEYOR_RESULTS (the container's termination message: 4096
	// bytes in all). The manager reads them when the job succeeds and records
	// them in the run's status; a declared result left unwritten fails the job.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	Results []ResultSpec `json:"results,omitempty"`
}

// ParamSpec declares a parameter of a Pipeline's runs.
// +kubebuilder:validation:XValidation:rule="!has(self.default) || !has(self.enum) || self.default in self.enum",message="the default must be one of enum"
type ParamSpec struct {
	// name is how jobs refer to the parameter: $(params.NAME).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_-]*$`
	Name string `json:"name"`

	// description says what the parameter is for (kubectl explain, the plugin).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`

	// default is the value of a run that gives none; without a default the
	// parameter must be given.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Default *string `json:"default,omitempty"`

	// enum are the values allowed; any value when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +listType=set
	Enum []string `json:"enum,omitempty"`
}

// JobVolume is a volume of a job's pod: exactly one source.
// +kubebuilder:validation:XValidation:rule="[has(self.secret), has(self.configMap), has(self.projected), has(self.emptyDir), has(self.persistentVolumeClaim)].filter(x, x).size() == 1",message="a volume has exactly one of secret, configMap, projected, emptyDir, persistentVolumeClaim"
type JobVolume struct {
	// name is the volume's name, as volumeMounts refer to it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// secret mounts a Secret of the namespace the job runs in.
	// +optional
	Secret *corev1.SecretVolumeSource `json:"secret,omitempty"`

	// configMap mounts a ConfigMap of the namespace the job runs in.
	// +optional
	ConfigMap *corev1.ConfigMapVolumeSource `json:"configMap,omitempty"`

	// projected mounts Secrets, ConfigMaps, the downward API and service
	// account tokens together.
	// +optional
	Projected *corev1.ProjectedVolumeSource `json:"projected,omitempty"`

	// emptyDir is scratch space that lives as long as the pod.
	// +optional
	EmptyDir *corev1.EmptyDirVolumeSource `json:"emptyDir,omitempty"`

	// persistentVolumeClaim mounts a claim of the run's namespace: only a
	// stage without an environment may (a claim belongs to one namespace).
	// +optional
	PersistentVolumeClaim *corev1.PersistentVolumeClaimVolumeSource `json:"persistentVolumeClaim,omitempty"`
}

// ResultSpec declares a result a job writes for the stages after it.
type ResultSpec struct {
	// name is how later stages refer to the result:
	// $(stages.STAGE.jobs.JOB.results.NAME).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_-]*$`
	Name string `json:"name"`

	// description says what the result is.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`
}

// Stage is one step of a Pipeline. Stages run strictly in order; the jobs of
// one stage run in parallel.
// +kubebuilder:validation:XValidation:rule="has(self.approval) != (has(self.jobs) && size(self.jobs) > 0)",message="a stage has either jobs or an approval gate: an approval stage has no jobs, a job stage has no approval"
// +kubebuilder:validation:XValidation:rule="!has(self.approval) || !has(self.environment)",message="an approval stage runs no jobs and takes no environment"
// +kubebuilder:validation:XValidation:rule="!has(self.approval) || !has(self.when) || self.when == 'auto'",message="an approval stage always waits for its approvers: leave when unset"
// +kubebuilder:validation:XValidation:rule="!has(self.when) || self.when != 'manual' || (has(self.triggerGroups) && size(self.triggerGroups) > 0)",message="a manual stage needs triggerGroups: the groups whose members may trigger it"
// +kubebuilder:validation:XValidation:rule="!has(self.jobs) || self.jobs.all(j, self.jobs.exists_one(k, k.name == j.name))",message="job names must be unique within a stage"
// +kubebuilder:validation:XValidation:rule="!has(self.environment) || !has(self.jobs) || self.jobs.all(j, !has(j.volumes) || j.volumes.all(v, !has(v.persistentVolumeClaim)))",message="a job of a stage with an environment cannot mount a persistentVolumeClaim: a claim belongs to the run's namespace, and the job's pod runs in the environment's"
// +kubebuilder:validation:XValidation:rule="!has(self.waitTimeout) || has(self.approval) || (has(self.when) && self.when == 'manual')",message="waitTimeout is for stages that wait for a person: approval stages and manual stages"
// +kubebuilder:validation:XValidation:rule="!has(self.waitTimeout) || duration(self.waitTimeout) >= duration('1s')",message="waitTimeout must be at least 1s"
// +kubebuilder:validation:XValidation:rule="!has(self.jobs) || self.jobs.all(j, !has(j.timeout) || duration(j.timeout) >= duration('1s'))",message="a job's timeout must be at least 1s"
type Stage struct {
	// name identifies the stage (build, testing, staging, ...); it is part of
	// the Job names.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// when says how the stage starts: auto (default) once the stages before it
	// succeeded, or manual, when a member of triggerGroups creates an Approval.
	// +optional
	// +kubebuilder:default=auto
	When StageWhen `json:"when,omitempty"`

	// environment is the namespace the stage's Jobs run in (staging,
	// pre-production, production); the run's own namespace when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Environment string `json:"environment,omitempty"`

	// triggerGroups are the Kubernetes groups whose members may trigger a manual
	// stage.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	TriggerGroups []string `json:"triggerGroups,omitempty"`

	// refs says which runs the stage belongs to: all (default), branches or tags.
	// +optional
	// +kubebuilder:default=all
	Refs StageRefs `json:"refs,omitempty"`

	// approval makes this a gate stage with no jobs that passes on its
	// approvers' decision.
	// +optional
	Approval *ApprovalGate `json:"approval,omitempty"`

	// waitTimeout is how long a manual or approval stage waits for its people;
	// past it the run ends as Expired (not approved). No limit when unset.
	// +optional
	WaitTimeout *metav1.Duration `json:"waitTimeout,omitempty"`

	// jobs run in parallel, each as a batch/v1 Job; the stage succeeds when all
	// of them succeed.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Jobs []JobSpec `json:"jobs,omitempty"`
}

// PipelineSource names the git repository a Pipeline builds, so that the push
// receiver can start runs for it.
type PipelineSource struct {
	// repository is the repository as the git provider names it in its events:
	// its path ("shop/shop": GitLab's path_with_namespace, GitHub's full_name)
	// or its URL (web or clone URL). Matched without a trailing ".git" or "/".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Repository string `json:"repository"`

	// secretRef names a Secret in the Pipeline's namespace holding the shared
	// secret of the provider's webhook: GitLab's secret token, or the key of
	// GitHub's X-Hub-Signature-256. Events that do not carry it are refused.
	// +required
	SecretRef SecretKeyReference `json:"secretRef"`

	// pushers map who pushes, as the git provider names them in its events,
	// to Kubernetes users. A run the receiver creates for a mapped pusher has
	// that user as its requester, so separation of duties holds: the pusher
	// of a tag may not approve its release. A pusher not mapped leaves the
	// manager as the requester; an approver whose username equals the
	// pusher's name is refused all the same.
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	// +listType=map
	// +listMapKey=name
	Pushers []PusherMapping `json:"pushers,omitempty"`

	// commitStatus reports each stage of the Pipeline's runs on the run's
	// commit at the git provider (GitLab's commit status API, GitHub's
	// statuses): what a developer sees on the commit and merge request.
	// Reporting never fails or holds a run.
	// +optional
	CommitStatus *CommitStatusReport `json:"commitStatus,omitempty"`
}

// CommitStatusReport says where and how to report commit statuses.
type CommitStatusReport struct {
	// provider is GitLab or GitHub.
	// +required
	// +kubebuilder:validation:Enum=GitLab;GitHub
	Provider string `json:"provider"`

	// apiURL is the provider's API root: https://gitlab.example.com/api/v4,
	// https://api.github.com.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	APIURL string `json:"apiURL"`

	// project is GitLab's project ID or path (acme/shop), or GitHub's owner/repo.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Project string `json:"project"`

	// tokenRef names a key of a Secret in the Pipeline's namespace holding the
	// API token (GitLab: a token with the api scope; GitHub: one that may
	// write commit statuses).
	// +required
	TokenRef SecretKeyReference `json:"tokenRef"`

	// targetURL is where a status links to; the run's namespace and name are
	// appended ("https://conveyor.example.com/runs/" links to
	// https://conveyor.example.com/runs/shop-ci/shop-tag-v1-4-0-x7k2p).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^https?://[^\s]*$`
	TargetURL string `json:"targetURL,omitempty"`
}

// Notifications are a Pipeline's own event sinks.
type Notifications struct {
	// sinks receive the transitions of the Pipeline's runs.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	Sinks []EventSink `json:"sinks"`
}

// EventSinkMode says how an event is sent to a sink.
// +kubebuilder:validation:Enum=Binary;Structured;Template
type EventSinkMode string

const (
	// SinkBinary sends a CloudEvent in binary mode: attributes as ce-
	// headers, the data as the JSON body.
	SinkBinary EventSinkMode = "Binary"
	// SinkStructured sends a CloudEvent in structured mode: the whole event
	// as one application/cloudevents+json body.
	SinkStructured EventSinkMode = "Structured"
	// SinkTemplate sends the JSON body the sink's template makes of the
	// event (a chat message, for instance), as application/json.
	SinkTemplate EventSinkMode = "Template"
)

// EventSink is one place a Pipeline's events go.
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.urlFrom)",message="give either url or urlFrom"
// +kubebuilder:validation:XValidation:rule="(has(self.mode) && self.mode == 'Template') == has(self.template)",message="template is given exactly when mode is Template"
type EventSink struct {
	// name of the sink, unique in the Pipeline; it names the sink in the
	// manager's metrics (<namespace>/<pipeline>/<name>).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// url the events are POSTed to.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	URL string `json:"url,omitempty"`

	// urlFrom names a key of a Secret in the Pipeline's namespace holding the
	// URL ("url" when the key is empty): for URLs that are secrets
	// themselves, like a chat's incoming webhook. Read when an event is sent;
	// the Pipeline's author must be allowed to get that Secret.
	// +optional
	URLFrom *SecretKeyReference `json:"urlFrom,omitempty"`

	// types limit the events sent to these (run.started, stage.waiting, ...:
	// the CloudEvent type without "dev.conveyor." and ".v1"); all when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=17
	// +kubebuilder:validation:items:Enum=run.started;run.succeeded;run.failed;run.rejected;run.expired;run.cancelled;stage.started;stage.waiting;stage.queued;stage.frozen;stage.blocked;stage.succeeded;stage.failed;stage.rejected;stage.expired;stage.cancelled;approval.accepted
	// +listType=set
	Types []string `json:"types,omitempty"`

	// mode is Binary (a CloudEvent, attributes in ce- headers; the default),
	// Structured (a CloudEvent as one application/cloudevents+json body) or
	// Template (the body the template makes).
	// +optional
	// +kubebuilder:default=Binary
	Mode EventSinkMode `json:"mode,omitempty"`

	// template is a Go text/template making the JSON body sent in Template
	// mode from the event: .Type (stage.waiting, ...), .ID, .Time, .Subject
	// and the event's data (.Namespace, .Run, .Pipeline, .Ref, .Commit,
	// .Requester, .Phase, .Stage, .Message, .WaitingFor, .Decision). The
	// function json writes a value as JSON ({{json .Message}} is a quoted,
	// escaped string). The body must be JSON: admission renders the template
	// with a sample event and refuses it otherwise.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Template string `json:"template,omitempty"`
}

// PusherMapping maps a git provider's user to a Kubernetes user.
type PusherMapping struct {
	// name of the user at the git provider (GitLab's user_username, GitHub's
	// pusher.name).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// user is the Kubernetes username, as the API server authenticates them.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	User string `json:"user"`
}

// SecretKeyReference names a key of a Secret in the same namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key of the secret in the Secret's data; "token" when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// History says how many finished runs of a Pipeline are kept.
type History struct {
	// succeeded is how many succeeded runs are kept (3 when unset).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Succeeded *int32 `json:"succeeded,omitempty"`

	// failed is how many runs that did not succeed (Failed, Rejected, Expired,
	// Cancelled) are kept (1 when unset).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Failed *int32 `json:"failed,omitempty"`
}

// EnvironmentQueue orders the runs waiting for an environment.
// +kubebuilder:validation:Enum=OldestFirst;NewestFirst
type EnvironmentQueue string

const (
	// QueueOldestFirst: queued deploys go in the order their runs were created.
	QueueOldestFirst EnvironmentQueue = "OldestFirst"
	// QueueNewestFirst: a newer run of the same Pipeline queued for (or
	// deploying to) an environment supersedes this Pipeline's older queued
	// deploys there: they end as Cancelled, reason Superseded.
	QueueNewestFirst EnvironmentQueue = "NewestFirst"
)

// PipelineSpec defines the stages of a delivery pipeline and the refs it runs for.
// +kubebuilder:validation:XValidation:rule="self.stages.all(s, self.stages.exists_one(t, t.name == s.name))",message="stage names must be unique"
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || duration(self.timeout) >= duration('1s')",message="timeout must be at least 1s"
type PipelineSpec struct {
	// timeout is how long a run may take from its start to its end, waits for
	// people included; past it the run fails with reason Timeout and its
	// running Jobs are stopped. No limit when unset.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// history says how many finished runs are kept; older ones are deleted
	// with their Jobs. Like a CronJob's: 3 succeeded and 1 failed by default.
	// +optional
	History *History `json:"history,omitempty"`

	// environmentQueue says what happens to this Pipeline's deploys waiting
	// for an environment another run deploys to (one deploy at a time per
	// environment, across all Pipelines): OldestFirst (default) queues them in
	// the order their runs were created; NewestFirst keeps only the newest
	// and supersedes the older ones.
	// +optional
	// +kubebuilder:default=OldestFirst
	EnvironmentQueue EnvironmentQueue `json:"environmentQueue,omitempty"`

	// refs are the branches and tags that may run this Pipeline.
	// +required
	Refs PipelineRefs `json:"refs"`

	// source is the repository whose pushes start runs through the push receiver.
	// +optional
	Source *PipelineSource `json:"source,omitempty"`

	// notifications send this Pipeline's run, stage and approval transitions
	// to its own sinks (a team's chat, its event bus), besides the sinks the
	// cluster's manager is given. Their hosts must be allowed by the
	// cluster's outbound allowlist.
	// +optional
	Notifications *Notifications `json:"notifications,omitempty"`

	// params are the values a run gives (its spec.params): a parameter without
	// a default must be given, and a run may give no other. Jobs read a value
	// as $(params.NAME) in their image, command, args and env values, and as
	// the environment variable CONVEYOR_PARAM_<NAME> (upper case, - as _).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	Params []ParamSpec `json:"params,omitempty"`

	// stages run in the order given.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Stages []Stage `json:"stages"`
}

// PipelineStatus reports whether the Pipeline can be used.
type PipelineStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is True when the definition is usable; Stalled says why not.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=conveyor
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Pipeline is the definition of a staged delivery pipeline.
type Pipeline struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec defines the pipeline.
	// +required
	Spec PipelineSpec `json:"spec"`

	// status reports whether the definition is usable.
	// +optional
	Status PipelineStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PipelineList is a list of Pipelines.
type PipelineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Pipeline `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Pipeline{}, &PipelineList{})
}
