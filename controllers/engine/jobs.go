package engine

import (
	"crypto/sha256"
	"encoding/base32"
	"maps"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// maxJobName is the longest Job name: the Job controller copies it into a
// label of its pods, and label values stop at 63 characters.
const maxJobName = 63

// JobName is the deterministic name of a job's Job: "<run>-<stage>-<job>",
// shortened with a hash of the full name when longer than 63 characters, so a
// restarted manager meets AlreadyExists instead of creating a duplicate. A Job
// that runs outside the run's namespace (an environment shared by runs of many
// namespaces) also carries a short hash of the run's namespace.
func JobName(runNamespace, run, stage, job, jobNamespace string) string {
	full := run + "-" + stage + "-" + job
	if jobNamespace != runNamespace {
		full += "-" + shortHash(runNamespace, 5)
	}
	if len(full) <= maxJobName {
		return full
	}
	hash := shortHash(runNamespace+"/"+full, 10)
	prefix := strings.TrimRight(full[:maxJobName-len(hash)-1], "-.")
	return prefix + "-" + hash
}

// shortHash is n lower-case base32 characters of the SHA-256 of s.
func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:n]
}

// RunKey is the value of conveyorv1.AnnotationRun for a run.
func RunKey(run *conveyorv1.PipelineRun) string { return run.Namespace + "/" + run.Name }

// Env returns the CONVEYOR_* variables every job's container receives.
func Env(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, job *conveyorv1.JobSpec) []corev1.EnvVar {
	kind, ref := Ref(run.Spec.Git)
	vars := []struct{ name, value string }{
		{"CONVEYOR_PIPELINE", run.Spec.PipelineRef.Name},
		{"CONVEYOR_PIPELINE_RUN", run.Name},
		{"CONVEYOR_NAMESPACE", run.Namespace},
		{"CONVEYOR_STAGE", stage.Name},
		{"CONVEYOR_JOB", job.Name},
		{"CONVEYOR_REF_KIND", string(kind)},
		{"CONVEYOR_REF_NAME", ref},
		{"CONVEYOR_BRANCH", run.Spec.Git.Branch},
		{"CONVEYOR_TAG", run.Spec.Git.Tag},
		{"CONVEYOR_COMMIT", run.Spec.Git.Commit},
		{"CONVEYOR_ENVIRONMENT", stage.Environment},
	}
	out := make([]corev1.EnvVar, 0, len(vars)+len(job.Env))
	for _, v := range vars {
		out = append(out, corev1.EnvVar{Name: v.name, Value: v.value})
	}
	for _, e := range job.Env {
		// Conveyor's own variables are not a job's to set (the CRD refuses
		// them; this holds for a Pipeline that got in another way).
		if !strings.HasPrefix(e.Name, "CONVEYOR_") {
			out = append(out, e)
		}
	}
	return out
}

// BuildJob returns the batch/v1 Job for one job of a stage. Jobs in the run's
// namespace are owned by the run (garbage collected with it); Jobs in an
// environment namespace are found through their labels and annotations.
func BuildJob(run *conveyorv1.PipelineRun, c JobToCreate) *batchv1.Job {
	labels := map[string]string{
		conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue,
		conveyorv1.LabelRunUID:    string(run.UID),
		conveyorv1.LabelStage:     c.Stage.Name,
		conveyorv1.LabelJob:       c.Job.Name,
	}
	if shard, ok := run.Labels[conveyorv1.LabelShard]; ok {
		labels[conveyorv1.LabelShard] = shard // the run's manager shard watches it
	}
	annotations := map[string]string{
		conveyorv1.AnnotationRun:      RunKey(run),
		conveyorv1.AnnotationPipeline: run.Spec.PipelineRef.Name,
	}
	podLabels, podAnnotations := withOurs(c.Job.PodMetadata, labels, annotations)
	container := jobContainer(run, c)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.Name,
			Namespace:   c.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(retries(&c.Job)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					RestartPolicy:      corev1.RestartPolicyNever,
					ServiceAccountName: c.Job.ServiceAccountName,
					NodeSelector:       c.Job.NodeSelector,
					Tolerations:        c.Job.Tolerations,
					SecurityContext:    c.Job.SecurityContext,
					Containers:         []corev1.Container{container},
					Volumes:            podVolumes(c.Job.Volumes),
					ImagePullSecrets:   c.Job.ImagePullSecrets,
				},
			},
		},
	}
	if c.Stage.Environment != "" {
		RestrictedPod(&job.Spec.Template.Spec)
	}
	if c.Job.Timeout != nil {
		// Whole seconds, rounded up: a deadline is never shorter than asked.
		secs := int64((c.Job.Timeout.Duration + time.Second - 1) / time.Second)
		job.Spec.ActiveDeadlineSeconds = &secs
	}
	if c.Namespace == run.Namespace {
		job.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(run, conveyorv1.GroupVersion.WithKind("PipelineRun"))}
	}
	return job
}

// jobContainer is the one container of a job's pod: its image and command
// (references already replaced), Conveyor's variables and the run's values,
// its mounts, and the results file as its termination message.
func jobContainer(run *conveyorv1.PipelineRun, c JobToCreate) corev1.Container {
	container := corev1.Container{
		Name:         c.Job.Name,
		Image:        c.Job.Image,
		Command:      c.Job.Command,
		Args:         c.Job.Args,
		WorkingDir:   c.Job.WorkingDir,
		VolumeMounts: c.Job.VolumeMounts,
		Env:          append(Env(run, &c.Stage, &c.Job), c.Values...),
	}
	if len(c.Job.Results) > 0 {
		// The results file is the termination message (File: what the job
		// wrote there, never the end of its log).
		container.TerminationMessagePath = ResultsFile
		container.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	if c.Job.Resources != nil {
		container.Resources = *c.Job.Resources
	}
	return container
}

// podVolumes are a job's volumes as a pod has them.
func podVolumes(vs []conveyorv1.JobVolume) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range vs {
		out = append(out, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{
			Secret: v.Secret, ConfigMap: v.ConfigMap, Projected: v.Projected, EmptyDir: v.EmptyDir, PersistentVolumeClaim: v.PersistentVolumeClaim,
		}})
	}
	return out
}

// withOurs is a job's pod metadata with Conveyor's labels and annotations
// over it: a job cannot pass its pods off as another run's.
func withOurs(pm *conveyorv1.PodMetadata, labels, annotations map[string]string) (map[string]string, map[string]string) {
	podLabels, podAnnotations := map[string]string{}, map[string]string{}
	if pm != nil {
		maps.Copy(podLabels, pm.Labels)
		maps.Copy(podAnnotations, pm.Annotations)
	}
	maps.Copy(podLabels, labels)
	maps.Copy(podAnnotations, annotations)
	return podLabels, podAnnotations
}

// ObserveJob reads a Job's phase the way the Job controller reports it: the
// Complete or Failed condition, with the reason and message of the latter. A
// job starts when its Job is created: that time is known the moment Conveyor
// creates it, so the Job controller's own start time changes no status.
func ObserveJob(job *batchv1.Job) JobObservation {
	start := job.CreationTimestamp
	obs := JobObservation{Name: job.Name, Namespace: job.Namespace, UID: job.UID, Phase: conveyorv1.JobRunning,
		StartTime: &start, CompletionTime: job.Status.CompletionTime,
		Attempts:       job.Status.Active + job.Status.Succeeded + job.Status.Failed,
		FailedAttempts: job.Status.Failed}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			obs.Phase = conveyorv1.JobSucceeded
			return obs
		case batchv1.JobFailed:
			obs.Phase, obs.Reason, obs.Message = conveyorv1.JobFailed, c.Reason, c.Message
			if obs.CompletionTime == nil {
				t := c.LastTransitionTime
				obs.CompletionTime = &t
			}
			return obs
		}
	}
	if job.Status.Succeeded > 0 && job.Status.Succeeded >= ptr.Deref(job.Spec.Completions, 1) {
		// Every completion counted: the Job controller writes the count with
		// the Complete condition, except when it could not remove a pod's
		// finalizer at once. Success then too: a Job with its count written
		// is no longer cached, so no later event would bring the condition.
		obs.Phase = conveyorv1.JobSucceeded
	}
	return obs
}
