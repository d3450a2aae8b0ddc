package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Freeze is a freeze window of an Environment that is open.
type Freeze struct {
	// Window is the window's name, Reason why it is there.
	Window, Reason string
	// Until is when deploys may enter again: the window's end, later when
	// another window opens before it closes.
	Until time.Time
}

// maxChain bounds how many windows in a row Frozen follows to find the end
// of a freeze (a schedule whose windows overlap forever is frozen for good
// as far as a deploy can tell).
const maxChain = 1000

// window is a freeze window read: when it is open at t, and when it opens next.
type window struct {
	spec conveyorv1.FreezeWindow
	// openAt returns the end of the opening that covers t, if any.
	openAt func(t time.Time) (time.Time, bool)
	// next is the first opening after t (zero when none).
	next func(t time.Time) time.Time
}

// ParseWindow reads a freeze window: a recurring one's schedule as a
// CronJob's (five fields or a macro, no CRON_TZ in it) in its time zone.
func ParseWindow(w conveyorv1.FreezeWindow) (window, error) {
	if w.Schedule == "" {
		if w.Start == nil || w.End == nil {
			return window{}, fmt.Errorf("freeze window %s: a one-off window needs start and end", w.Name)
		}
		start, end := w.Start.Time, w.End.Time
		return window{spec: w,
			openAt: func(t time.Time) (time.Time, bool) { return end, !t.Before(start) && t.Before(end) },
			next: func(t time.Time) time.Time {
				if t.Before(start) {
					return start
				}
				return time.Time{}
			}}, nil
	}
	if w.Duration == nil || w.Duration.Duration <= 0 {
		return window{}, fmt.Errorf("freeze window %s: a recurring window needs a duration", w.Name)
	}
	loc := time.UTC
	if w.TimeZone != "" {
		l, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			return window{}, fmt.Errorf("freeze window %s: unknown time zone %q", w.Name, w.TimeZone)
		}
		loc = l
	}
	sched, err := cron.ParseStandard(w.Schedule)
	if err != nil {
		return window{}, fmt.Errorf("freeze window %s: schedule %q: %w", w.Name, w.Schedule, err)
	}
	if containsTZ(w.Schedule) {
		return window{}, fmt.Errorf("freeze window %s: schedule %q: give the time zone in timeZone, not in the schedule", w.Name, w.Schedule)
	}
	d := w.Duration.Duration
	return window{spec: w,
		openAt: func(t time.Time) (time.Time, bool) {
			// The first opening after t-d is the one that covers t, if any.
			s := sched.Next(t.In(loc).Add(-d))
			if s.IsZero() || s.After(t) {
				return time.Time{}, false
			}
			return s.Add(d), true
		},
		next: func(t time.Time) time.Time { return sched.Next(t.In(loc)) }}, nil
}

func containsTZ(s string) bool {
	return len(s) >= 3 && (s[:3] == "TZ=" || len(s) >= 8 && s[:8] == "CRON_TZ=")
}

// ParseWindows reads every freeze window of an Environment.
func ParseWindows(env *conveyorv1.Environment) ([]window, error) {
	var out []window
	for _, w := range env.Spec.FreezeWindows {
		pw, err := ParseWindow(w)
		if err != nil {
			return nil, err
		}
		out = append(out, pw)
	}
	return out, nil
}

// Frozen is the freeze an Environment is in at now, nil when none. The freeze
// lasts until no window is open: windows that open before the one open now
// closes extend it.
func Frozen(windows []window, now time.Time) *Freeze {
	var f *Freeze
	at := now
	for range maxChain {
		var next *Freeze
		for _, w := range windows {
			if end, open := w.openAt(at); open && (next == nil || end.After(next.Until)) {
				next = &Freeze{Window: w.spec.Name, Reason: w.spec.Reason, Until: end}
			}
		}
		if next == nil {
			return f
		}
		if f == nil {
			f = next
		}
		f.Until = next.Until
		at = next.Until
	}
	return f
}

// NextFreeze is when the next window opens after now (zero when none).
func NextFreeze(windows []window, now time.Time) time.Time {
	var first time.Time
	for _, w := range windows {
		if n := w.next(now); !n.IsZero() && (first.IsZero() || n.Before(first)) {
			first = n
		}
	}
	return first
}

// FreezeMessage tells a person why a deploy waits, and who may override it.
func FreezeMessage(env *conveyorv1.Environment, f *Freeze) string {
	msg := fmt.Sprintf("frozen: Environment %s is in freeze window %s until %s", env.Name, f.Window, f.Until.UTC().Format(time.RFC3339))
	if f.Reason != "" {
		msg += " (" + f.Reason + ")"
	}
	if len(env.Spec.OverrideGroups) > 0 {
		msg += fmt.Sprintf("; a member of %s may deploy now with an Approval that sets overrideFreeze and says why", strings.Join(env.Spec.OverrideGroups, ", "))
	}
	return msg
}
