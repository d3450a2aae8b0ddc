package integration_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/conveyor-dev/conveyor/controllers/manager"
)

// Without cert-manager, the manager provisions its webhook certificate itself:
// a CA and a serving certificate for the webhook Service in a Secret, the CA
// injected into Conveyor's webhook configurations, the files in the cert
// directory once the Secret is mounted there (as the kubelet does).
func TestCertRotation(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "conveyor-webhook-cert", Namespace: ns}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// Webhook configurations with Conveyor's names, matching nothing the other tests create.
	rule := []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"nothings"}}}}
	cc := admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://localhost:1/none")}
	none := admissionregistrationv1.SideEffectClassNone
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: manager.MutatingWebhookConfiguration},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "m.conveyor.dev", ClientConfig: cc, Rules: rule, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}}}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: manager.ValidatingWebhookConfiguration},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "v.conveyor.dev", ClientConfig: cc, Rules: rule, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}}}
	for _, o := range []client.Object{mwc, vwc} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, o) })
	}

	certDir := t.TempDir()
	mgr, err := ctrl.NewManager(cfg, manager.Options(manager.Config{MetricsAddr: "0", ProbeAddr: "0"}))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	dns := "conveyor-webhook." + ns + ".svc"
	if err := manager.AddCertRotator(mgr, manager.CertRotation{Namespace: ns, SecretName: secret.Name, DNSName: dns, CertDir: certDir}, ready); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(mctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Play the kubelet: copy the Secret into the cert directory.
	kubelet := func() {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), s); err != nil {
			return
		}
		for k, v := range s.Data {
			_ = os.WriteFile(filepath.Join(certDir, k), v, 0o600)
		}
	}
	NewWithT(t).Eventually(func() bool {
		kubelet()
		select {
		case <-ready:
			return true
		default:
			return false
		}
	}).WithTimeout(60*time.Second).WithPolling(500*time.Millisecond).Should(BeTrue(), "the certificate was not ready")

	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), s); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.Data["ca.crt"]) {
		t.Fatalf("no CA in the Secret: keys %v", keys(s.Data))
	}
	block, _ := pem.Decode(s.Data["tls.crt"])
	if block == nil {
		t.Fatal("no serving certificate in the Secret")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: dns, Roots: pool}); err != nil {
		t.Fatalf("serving certificate does not verify for %s: %v", dns, err)
	}
	t.Logf("Serving certificate for %s, valid until %s, signed by %s", dns, cert.NotAfter.Format(time.RFC3339), cert.Issuer.CommonName)
	NewWithT(t).Eventually(func(g Gomega) {
		m := &admissionregistrationv1.MutatingWebhookConfiguration{}
		v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mwc), m)).To(Succeed())
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(vwc), v)).To(Succeed())
		g.Expect(m.Webhooks[0].ClientConfig.CABundle).To(Equal(s.Data["ca.crt"]))
		g.Expect(v.Webhooks[0].ClientConfig.CABundle).To(Equal(s.Data["ca.crt"]))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	t.Log("The CA is injected into both webhook configurations")
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
