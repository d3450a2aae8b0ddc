// Command manager runs Conveyor's controllers (Pipeline, PipelineRun,
// Approval), its admission webhooks and its push receiver.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	cliflag "k8s.io/component-base/cli/flag"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/conveyor-dev/conveyor/controllers/admission"
	"github.com/conveyor-dev/conveyor/controllers/gitstatus"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
	"github.com/conveyor-dev/conveyor/controllers/receiver"
)

// options are the manager's command-line flags.
type options struct {
	manager      manager.Config
	concurrency  int
	qps          float64
	burst        int
	webhooks     bool
	certRotation bool
	certSecret   string
	webhookSvc   string
	webhookDNS   string
	receiverAddr string
	trustAny     bool
	eventSinks   []string
	eventQueue   int
	outbound     []string
	shard        string
	envStatus    bool
	zap          zap.Options
}

func parseFlags() *options {
	o := &options{}
	mc := &o.manager
	flag.StringVar(&mc.MetricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 turns it off.")
	flag.BoolVar(&mc.MetricsSecure, "metrics-secure", true, "Serve metrics over HTTPS to callers the API server authenticates and authorizes (get on /metrics, as the ClusterRole conveyor-metrics-reader grants); false serves them in the open (local use).")
	flag.StringVar(&mc.ProbeAddr, "health-probe-bind-address", ":8081", "Address the health probes bind to.")
	flag.StringVar(&mc.PprofAddr, "pprof-bind-address", "0", "Address Go's profiling endpoint (/debug/pprof) binds to; 0 turns it off.")
	flag.BoolVar(&mc.LeaderElect, "leader-elect", true, "Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&mc.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (the manager's own when in a cluster).")
	flag.StringVar(&mc.LeaderElectionID, "leader-election-id", manager.DefaultLeaderElectionID, "Name of the leader election Lease; each shard (--watch-label-selector) needs its own, which the manager's Role must let it update.")
	flag.IntVar(&mc.WebhookPort, "webhook-port", 9443, "Port the admission webhook server listens on.")
	flag.StringVar(&mc.WebhookHost, "webhook-host", "", "Address the admission webhook server binds to (all when empty).")
	flag.StringVar(&mc.WebhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory with the webhook server's tls.crt and tls.key.")
	flag.BoolVar(&o.webhooks, "webhooks", true, "Serve the admission webhooks (who may trigger and approve which stage).")
	flag.BoolVar(&o.certRotation, "cert-rotation", false, "Provision and rotate the webhook certificate in a Secret and inject its CA into the webhook configurations (use when cert-manager is not installed).")
	flag.StringVar(&o.certSecret, "cert-secret", "conveyor-webhook-cert", "Secret, in the manager's namespace, holding the rotated webhook certificate.")
	flag.StringVar(&o.webhookSvc, "webhook-service", "conveyor-webhook-service", "Service, in the manager's namespace, in front of the webhook server.")
	flag.StringVar(&o.webhookDNS, "webhook-dns-name", "", "DNS name of the rotated webhook certificate; <webhook-service>.<namespace>.svc when empty (localhost for a manager outside the cluster).")
	flag.StringVar(&o.receiverAddr, "receiver-bind-address", "0", "Address the git push receiver (POST /hooks/gitlab, /hooks/github) listens on; 0 turns it off.")
	flag.BoolVar(&o.trustAny, "insecure-trust-unrecorded-approvers", false, "Count Approvals that carry no approver recorded by the admission webhook (only for a manager run locally with --webhooks=false; anyone could then approve as anyone).")
	flag.IntVar(&o.concurrency, "concurrency", 4, "Reconciles run at once per kind.")
	flag.Float64Var(&o.qps, "kube-api-qps", 100, "Requests per second to the API server, per kind (client-side limit).")
	flag.IntVar(&o.burst, "kube-api-burst", 200, "Burst of requests to the API server above kube-api-qps, per kind.")
	flag.Var(cliflag.NewStringSlice(&o.eventSinks), "event-sink", "URL to POST a CloudEvent to for each run, stage and approval transition (repeat for more sinks; none by default).")
	flag.IntVar(&o.eventQueue, "event-queue-size", 1000, "Events each sink's queue holds; a full queue drops new events and counts them (conveyor_cloudevents_total{result=\"dropped\"}).")
	flag.Var(cliflag.NewStringSlice(&o.outbound), "outbound-allow", "Hosts ('hooks.slack.com', '*.example.com'), IP addresses and CIDR networks that URLs named by Pipelines (their event sinks, their commit status API) may reach; repeat or separate with commas. Empty allows any host; loopback, link-local (cloud metadata), unspecified and multicast addresses are refused unless a network listed here contains them.")
	flag.StringVar(&o.shard, "watch-label-selector", "", "Handle only the runs (and their Jobs and Approvals) and Pipelines whose labels match, e.g. 'conveyor.dev/shard=b', or '!conveyor.dev/shard' for the unlabelled ones: one manager per shard, each with its own --leader-election-id. Empty handles all.")
	flag.BoolVar(&o.envStatus, "environment-status", true, "Write Environments' status (policy readiness, freeze windows); with shards, exactly one manager does. Every manager takes environment locks and records deploys in that status.")
	o.zap.BindFlags(flag.CommandLine)
	flag.Parse()
	return o
}

var log = ctrl.Log.WithName("setup")

func fail(err error, msg string) {
	log.Error(err, msg)
	os.Exit(1)
}

func main() {
	o := parseFlags()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	shard, err := manager.ParseShard(o.shard)
	if err != nil {
		fail(err, "Invalid flag")
	}
	o.manager.Shard = shard
	mgr, err := ctrl.NewManager(cfg, manager.Options(o.manager))
	if err != nil {
		fail(err, "Unable to create manager")
	}
	ctx := ctrl.SetupSignalHandler()
	opts := manager.SetupOptions{TrustUnrecordedApprovers: o.trustAny, Shard: shard, NoEnvironmentStatus: !o.envStatus}
	guard, err := outbound.Parse(o.outbound)
	if err != nil {
		fail(err, "Invalid flag")
	}
	// Commit statuses: sent for Pipelines whose spec.source.commitStatus asks.
	opts.Reporter = gitstatus.New(gitstatus.Options{Secrets: mgr.GetAPIReader(), Guard: guard, Delivery: notify.Delivery{Log: ctrl.Log.WithName("commit-status")}})
	if err := mgr.Add(opts.Reporter); err != nil {
		fail(err, "Unable to add the commit status reporter")
	}
	// Events: to the cluster's sinks, and to the sinks Pipelines name.
	opts.Notifier, err = notify.New(notify.Options{Sinks: o.eventSinks, Guard: guard, Secrets: mgr.GetAPIReader(),
		Delivery: notify.Delivery{QueueSize: o.eventQueue, Log: ctrl.Log.WithName("events")}})
	if err != nil {
		fail(err, "Unable to set up the event sinks")
	}
	if err := mgr.Add(opts.Notifier); err != nil {
		fail(err, "Unable to add the event sender")
	}
	opts.Controller.MaxConcurrentReconciles = o.concurrency
	if err := manager.Setup(ctx, mgr, opts); err != nil {
		fail(err, "Unable to set up controllers")
	}
	if err := receiver.Setup(ctx, mgr, o.receiverAddr); err != nil {
		fail(err, "Unable to set up the push receiver")
	}
	if o.webhooks {
		setupWebhooks(mgr, o, guard)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		fail(err, "Unable to add the health check")
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		fail(err, "Unable to add the readiness check")
	}
	log.Info("Starting manager", "webhooks", o.webhooks, "certRotation", o.certRotation, "watchLabelSelector", o.shard)
	if err := mgr.Start(ctx); err != nil {
		fail(err, "Manager stopped with an error")
	}
}

// setupWebhooks registers the admission webhooks once their certificate
// exists (rotated by the manager itself with --cert-rotation), and a
// readiness check that passes once they serve.
func setupWebhooks(mgr ctrl.Manager, o *options, guard *outbound.Guard) {
	ready := make(chan struct{})
	if o.certRotation {
		ns := os.Getenv("POD_NAMESPACE")
		if ns == "" {
			fail(fmt.Errorf("POD_NAMESPACE is not set"), "Certificate rotation needs the manager's namespace")
		}
		dns := o.webhookDNS
		if dns == "" {
			dns = fmt.Sprintf("%s.%s.svc", o.webhookSvc, ns)
		}
		log.Info("Rotating the webhook certificate", "secret", o.certSecret, "dnsName", dns)
		if err := manager.AddCertRotator(mgr, manager.CertRotation{
			Namespace: ns, SecretName: o.certSecret, DNSName: dns, CertDir: o.manager.WebhookCertDir,
		}, ready); err != nil {
			fail(err, "Unable to set up certificate rotation")
		}
	} else {
		close(ready)
	}
	// The first use of the webhook server starts it, and it needs its certificate to start.
	go func() {
		<-ready
		if err := admission.Setup(mgr, admission.Options{Guard: guard}); err != nil {
			fail(err, "Unable to set up webhooks")
		}
	}()
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-ready:
			return mgr.GetWebhookServer().StartedChecker()(req)
		default:
			return errors.New("webhook certificate not ready")
		}
	}); err != nil {
		fail(err, "Unable to add the webhook readiness check")
	}
}
