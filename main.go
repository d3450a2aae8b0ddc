// Command manager runs Conveyor's controllers (Pipeline, PipelineRun,
// Approval) and its admission webhooks.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/conveyor-dev/conveyor/controllers/admission"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/receiver"
)

func main() {
	var (
		mc           manager.ManagerConfig
		concurrency  int
		qps          float64
		burst        int
		webhooks     bool
		certRotation bool
		certSecret   string
		webhookSvc   string
		webhookDNS   string
		receiverAddr string
		podNamespace = os.Getenv("POD_NAMESPACE")
		webhookReady = make(chan struct{})
		zapOpts      = zap.Options{}
	)
	flag.StringVar(&mc.MetricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 turns it off.")
	flag.StringVar(&mc.ProbeAddr, "health-probe-bind-address", ":8081", "Address the health probes bind to.")
	flag.StringVar(&mc.PprofAddr, "pprof-bind-address", "0", "Address Go's profiling endpoint (/debug/pprof) binds to; 0 turns it off.")
	flag.BoolVar(&mc.LeaderElect, "leader-elect", true, "Elect a leader so that only one replica reconciles at a time.")
	flag.StringVar(&mc.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (the manager's own when in a cluster).")
	flag.IntVar(&mc.WebhookPort, "webhook-port", 9443, "Port the admission webhook server listens on.")
	flag.StringVar(&mc.WebhookHost, "webhook-host", "", "Address the admission webhook server binds to (all when empty).")
	flag.StringVar(&mc.WebhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory with the webhook server's tls.crt and tls.key.")
	flag.BoolVar(&webhooks, "webhooks", true, "Serve the admission webhooks (who may trigger and approve which stage).")
	flag.BoolVar(&certRotation, "cert-rotation", false, "Provision and rotate the webhook certificate in a Secret and inject its CA into the webhook configurations (use when cert-manager is not installed).")
	flag.StringVar(&certSecret, "cert-secret", "conveyor-webhook-cert", "Secret, in the manager's namespace, holding the rotated webhook certificate.")
	flag.StringVar(&webhookSvc, "webhook-service", "conveyor-webhook-service", "Service, in the manager's namespace, in front of the webhook server.")
	flag.StringVar(&webhookDNS, "webhook-dns-name", "", "DNS name of the rotated webhook certificate; <webhook-service>.<namespace>.svc when empty (localhost for a manager outside the cluster).")
	flag.StringVar(&receiverAddr, "receiver-bind-address", "0", "Address the git push receiver (POST /hooks/gitlab, /hooks/github) listens on; 0 turns it off.")
	flag.IntVar(&concurrency, "concurrency", 4, "Reconciles run at once per kind.")
	flag.Float64Var(&qps, "kube-api-qps", 50, "Requests per second to the API server (client-side limit).")
	flag.IntVar(&burst, "kube-api-burst", 100, "Burst of requests to the API server above kube-api-qps.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	fail := func(err error, msg string) {
		log.Error(err, msg)
		os.Exit(1)
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(cfg, manager.ManagerOptions(mc))
	if err != nil {
		fail(err, "Unable to create manager")
	}
	ctx := ctrl.SetupSignalHandler()

	if webhooks && certRotation {
		if podNamespace == "" {
			fail(fmt.Errorf("POD_NAMESPACE is not set"), "Certificate rotation needs the manager's namespace")
		}
		if webhookDNS == "" {
			webhookDNS = fmt.Sprintf("%s.%s.svc", webhookSvc, podNamespace)
		}
		log.Info("Rotating the webhook certificate", "secret", certSecret, "dnsName", webhookDNS)
		if err := manager.AddCertRotator(mgr, manager.CertRotation{
			Namespace: podNamespace, SecretName: certSecret, DNSName: webhookDNS, CertDir: mc.WebhookCertDir,
		}, webhookReady); err != nil {
			fail(err, "Unable to set up certificate rotation")
		}
	} else {
		close(webhookReady)
	}

	opts := manager.Options{}
	opts.Controller.MaxConcurrentReconciles = concurrency
	if err := manager.Setup(ctx, mgr, opts); err != nil {
		fail(err, "Unable to set up controllers")
	}
	if err := receiver.Setup(ctx, mgr, receiverAddr); err != nil {
		fail(err, "Unable to set up the push receiver")
	}
	if webhooks {
		// Register the webhooks once the certificate exists: the first use of
		// the webhook server starts it, and it needs its certificate to start.
		go func() {
			<-webhookReady
			if err := admission.Setup(mgr); err != nil {
				fail(err, "Unable to set up webhooks")
			}
		}()
		if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
			select {
			case <-webhookReady:
				return mgr.GetWebhookServer().StartedChecker()(req)
			default:
				return errors.New("webhook certificate not ready")
			}
		}); err != nil {
			fail(err, "Unable to add the webhook readiness check")
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		fail(err, "Unable to add the health check")
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		fail(err, "Unable to add the readiness check")
	}
	log.Info("Starting manager", "webhooks", webhooks, "certRotation", certRotation)
	if err := mgr.Start(ctx); err != nil {
		fail(err, "Manager stopped with an error")
	}
}
