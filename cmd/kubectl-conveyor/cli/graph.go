package cli

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// maxColumn is the widest a stage's column gets; longer notes wrap.
const maxColumn = 28

// ANSI colours by phase. Symbols carry the same meaning without them.
var colours = map[string]string{
	"Succeeded": "\x1b[32m", "Failed": "\x1b[31m", "Rejected": "\x1b[31m", "Expired": "\x1b[31m",
	"Running": "\x1b[36m", "Waiting": "\x1b[33m", "Frozen": "\x1b[34m", "Blocked": "\x1b[35m",
	"Queued": "\x1b[33m", "Pending": "\x1b[90m", "Cancelled": "\x1b[90m",
}

const (
	bold  = "\x1b[1m"
	dim   = "\x1b[2m"
	reset = "\x1b[0m"
)

type cell struct {
	text  string
	style string
}

// Graph draws a run as the seed's pipeline picture: stages as columns, left to
// right, each with its status, its jobs beneath, and who decided it or what it
// waits for. colour adds ANSI colours (for a terminal).
func Graph(w io.Writer, v RunView, colour bool) error {
	p := painter(colour)
	var b strings.Builder
	writeHeader(&b, v, p)
	writeColumns(&b, stageColumns(v.Stages), p)
	_, err := io.WriteString(w, b.String())
	return err
}

type painter bool

func (p painter) paint(style, s string) string {
	if !p || style == "" {
		return s
	}
	return style + s + reset
}

// writeHeader writes the run's name, ref, phase and who asked for it.
func writeHeader(b *strings.Builder, v RunView, p painter) {
	fmt.Fprintf(b, "%s %s/%s   Pipeline %s   %s", p.paint(bold, "PipelineRun"), v.Namespace, v.Name, v.Pipeline, v.Ref)
	if v.Commit != "" {
		fmt.Fprintf(b, " @ %s", short(v.Commit))
	}
	b.WriteString("\n")
	line := p.paint(colours[v.Phase], v.Symbol+" "+v.Phase)
	if v.CurrentStage != "" {
		line += " at " + v.CurrentStage
	}
	if v.Requester != "" {
		line += "   requested by " + v.Requester
	}
	if v.RerunOf != "" {
		line += "   rerun of " + v.RerunOf
	}
	if v.Cancelled && !v.Finished {
		line += "   cancelling"
	}
	b.WriteString(line + "\n")
	if v.Message != "" && v.Finished {
		b.WriteString(p.paint(dim, v.Message) + "\n")
	}
	b.WriteString("\n")
}

// stageColumns are the cells of each stage's column, top to bottom.
func stageColumns(stages []StageView) [][]cell {
	columns := make([][]cell, len(stages))
	for i, s := range stages {
		col := []cell{{s.Name, bold}, {s.Symbol + " " + s.Phase, colours[s.Phase]}}
		for _, j := range s.Jobs {
			text := "  " + j.Symbol + " " + j.Name
			if j.Attempts > 1 {
				text += fmt.Sprintf(" (%d tries)", j.Attempts)
			}
			col = append(col, cell{text, colours[j.Phase]})
			for _, r := range j.Results {
				for _, l := range wrap(r, maxColumn-4) {
					col = append(col, cell{"    " + l, dim})
				}
			}
		}
		if s.Kind != "auto" && len(s.Jobs) == 0 {
			col = append(col, cell{"  (" + s.Kind + ")", dim})
		}
		for _, n := range s.Notes() {
			for _, l := range wrap(n, maxColumn-2) {
				col = append(col, cell{"  " + l, dim})
			}
		}
		columns[i] = col
	}
	return columns
}

// writeColumns lays the columns side by side, padded to their widths, with
// arrows between the stage names.
func writeColumns(b *strings.Builder, columns [][]cell, p painter) {
	widths := make([]int, len(columns))
	rows := 0
	for i, col := range columns {
		rows = max(rows, len(col))
		for _, c := range col {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for r := 0; r < rows; r++ {
		var out strings.Builder
		for i, col := range columns {
			c := cell{}
			if r < len(col) {
				c = col[r]
			}
			out.WriteString(p.paint(c.style, c.text))
			if i == len(columns)-1 {
				break
			}
			sep := "   "
			if r == 0 {
				sep = " → "
			}
			out.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)) + sep)
		}
		b.WriteString(strings.TrimRight(out.String(), " ") + "\n")
	}
}

// wrap breaks s into lines of at most width runes, at spaces where it can.
func wrap(s string, width int) []string {
	var lines []string
	var cur []rune
	for _, word := range strings.Fields(s) {
		w := []rune(word)
		for len(w) > width {
			if len(cur) > 0 {
				lines, cur = append(lines, string(cur)), nil
			}
			lines, w = append(lines, string(w[:width])), w[width:]
		}
		switch {
		case len(cur) == 0:
			cur = w
		case len(cur)+1+len(w) <= width:
			cur = append(append(cur, ' '), w...)
		default:
			lines, cur = append(lines, string(cur)), w
		}
	}
	if len(cur) > 0 {
		lines = append(lines, string(cur))
	}
	return lines
}

func short(commit string) string {
	if len(commit) > 8 {
		return commit[:8]
	}
	return commit
}
