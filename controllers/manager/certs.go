package manager

import (
	"fmt"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Names of the webhook configurations that config/ and the chart install; the
// certificate rotator injects its CA into them.
const (
	MutatingWebhookConfiguration   = "conveyor-mutating-webhook-configuration"
	ValidatingWebhookConfiguration = "conveyor-validating-webhook-configuration"
)

// CertRotation configures the manager's own webhook certificate, for clusters
// without cert-manager: a CA and a serving certificate kept in a Secret,
// renewed before they expire, the CA injected into the webhook configurations.
// The Secret must exist (empty) and be mounted at CertDir, as config/ and the
// chart do.
type CertRotation struct {
	Namespace  string
	SecretName string
	DNSName    string
	CertDir    string
}

// AddCertRotator adds the rotator to the manager; ready is closed once the
// certificate is on disk and the webhook server can start.
func AddCertRotator(mgr ctrl.Manager, c CertRotation, ready chan struct{}) error {
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: c.Namespace, Name: c.SecretName},
		CertDir:        c.CertDir,
		CAName:         "conveyor-ca",
		CAOrganization: "conveyor",
		DNSName:        c.DNSName,
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: MutatingWebhookConfiguration, Type: rotator.Mutating},
			{Name: ValidatingWebhookConfiguration, Type: rotator.Validating},
		},
	}); err != nil {
		return fmt.Errorf("adding the certificate rotator: %w", err)
	}
	return nil
}
