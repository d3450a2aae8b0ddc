package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// TemplateData is what a sink's template reads: the event's data and its
// attributes.
type TemplateData struct {
	Data
	// Type is the event's type without "dev.conveyor." and ".v1": stage.waiting.
	Type    string
	ID      string
	Subject string
	Time    time.Time
}

// ShortType is an event type without "dev.conveyor." and ".v1"
// (stage.waiting): what a Pipeline sink's types name.
func ShortType(typ string) string {
	return strings.TrimSuffix(strings.TrimPrefix(typ, typePrefix), ".v1")
}

var funcs = template.FuncMap{"json": func(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}}

// maxBody bounds what a template may make.
const maxBody = 64 << 10

// Render is the body the template makes of the event. It must be JSON.
func Render(text string, e cloudevents.Event) ([]byte, error) {
	t, err := template.New("sink").Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	d := TemplateData{Type: ShortType(e.Type()), ID: e.ID(), Subject: e.Subject(), Time: e.Time()}
	if err := e.DataAs(&d.Data); err != nil {
		return nil, fmt.Errorf("event data: %w", err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if buf.Len() > maxBody {
		return nil, fmt.Errorf("template: the body is %d bytes, more than %d", buf.Len(), maxBody)
	}
	if !json.Valid(buf.Bytes()) {
		return nil, fmt.Errorf("template: the body is not JSON: %.200s", buf.String())
	}
	return buf.Bytes(), nil
}

// CheckTemplate renders the template with a sample event of a waiting stage
// whose message and names hold characters JSON must escape: what admission
// refuses, it says why.
func CheckTemplate(text string) error {
	e := cloudevents.NewEvent()
	e.SetID("00000000-0000-0000-0000-000000000000/approve/Waiting")
	e.SetSource("/apis/conveyor.dev/v1alpha1/namespaces/ns/pipelineruns/run")
	e.SetType(eventType("stage", "waiting"))
	e.SetSubject("approve")
	e.SetTime(time.Unix(0, 0).UTC())
	_ = e.SetData(cloudevents.ApplicationJSON, Data{Namespace: "ns", Run: "run", RunUID: "uid", Pipeline: "shop",
		Ref: "tag/v1.4.0", Commit: "3f2a9c1d", Requester: `rita "the" \\ engineer`, Phase: "Waiting", Stage: "approve",
		Message: "waits for 1 approval from release-engineers\n\"quoted\" <b>&</b>", WaitingFor: []string{"release-engineers"}})
	_, err := Render(text, e)
	return err
}
