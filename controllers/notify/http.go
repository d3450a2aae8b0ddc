package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Do sends req with c and reads the answer as a delivery: a 2xx is done;
// no answer, 5xx, 408 and 429 are worth another try (RetryableStatus); any
// other answer is an error naming who answered.
func Do(c *http.Client, req *http.Request, who string) (retry bool, err error) {
	res, err := c.Do(req)
	if err != nil {
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return false, nil
	}
	return RetryableStatus(res.StatusCode), fmt.Errorf("%s answered %s", who, res.Status)
}

// ErrNoValue: the Secret holds no value under the key.
var ErrNoValue = errors.New("no value")

// SecretValue is the value, trimmed, of the key ref names (defaultKey when
// it names none) in a Secret of namespace; an error when the Secret cannot
// be read or holds no such value.
func SecretValue(ctx context.Context, reader client.Reader, namespace string, ref conveyorv1.SecretKeyReference, defaultKey string) (string, error) {
	secret := &corev1.Secret{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, secret); err != nil {
		return "", fmt.Errorf("reading Secret %s/%s: %w", namespace, ref.Name, err)
	}
	key := cmp.Or(ref.Key, defaultKey)
	value := strings.TrimSpace(string(secret.Data[key]))
	if value == "" {
		return "", fmt.Errorf("%w: Secret %s/%s has no key %s", ErrNoValue, namespace, ref.Name, key)
	}
	return value, nil
}
