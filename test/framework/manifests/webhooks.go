package manifests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// installedManager is the manager's username in config/: its service
// account in conveyor-system.
const installedManager = "system:serviceaccount:conveyor-system:conveyor-manager"

// SpareManager gives the webhooks of cfg the match conditions that
// config/webhook/release_ledger_writer.yaml gives them when installed
// (the release ledger's webhook is not called for the manager's own
// writes), naming username as the manager: the suites and the bench run
// the manager as a user of their own, not as the installed service account.
func SpareManager(root string, cfg *admissionregistrationv1.ValidatingWebhookConfiguration, username string) error {
	path := filepath.Join(root, "config/webhook/release_ledger_writer.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	patch := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, patch); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range patch.Webhooks {
		found := false
		for i := range cfg.Webhooks {
			if cfg.Webhooks[i].Name != p.Name {
				continue
			}
			found = true
			cfg.Webhooks[i].MatchConditions = nil
			for _, c := range p.MatchConditions {
				if !strings.Contains(c.Expression, installedManager) {
					return fmt.Errorf("%s: condition %s does not name %s", path, c.Name, installedManager)
				}
				c.Expression = strings.ReplaceAll(c.Expression, installedManager, username)
				cfg.Webhooks[i].MatchConditions = append(cfg.Webhooks[i].MatchConditions, c)
			}
		}
		if !found {
			return fmt.Errorf("%s patches webhook %s, which %s does not have", path, p.Name, cfg.Name)
		}
	}
	return nil
}
