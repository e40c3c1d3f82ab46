// Package skills loads the skill documents that DelegateTask can add to a
// task's system prompt.
//
// A skills directory holds one skill per entry, in either layout:
//
//	<dir>/<name>/SKILL.md   (the Agent Skills layout; YAML front matter allowed)
//	<dir>/<name>.md
//
// The library is read once at start-up so the hot path does no file I/O;
// restart the orchestrator to pick up changed skills.
package skills

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// MaxSkillBytes bounds one skill document.
const MaxSkillBytes = 256 << 10

// ErrUnknown is returned for a skill name that is not in the library.
var ErrUnknown = errors.New("unknown skill")

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Library is an immutable set of loaded skills.
type Library struct {
	byName map[string]string
}

// Load reads every skill in dir. A missing directory yields an empty
// library (every requested skill is then unknown); an unreadable or
// oversized skill is an error.
func Load(dir string) (*Library, error) {
	lib := &Library{byName: map[string]string{}}
	if dir == "" {
		return lib, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return lib, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading skills directory: %w", err)
	}
	for _, e := range entries {
		name, path := "", ""
		switch {
		case e.IsDir():
			name, path = e.Name(), filepath.Join(dir, e.Name(), "SKILL.md")
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		case strings.HasSuffix(e.Name(), ".md"):
			name, path = strings.TrimSuffix(e.Name(), ".md"), filepath.Join(dir, e.Name())
		default:
			continue
		}
		if !namePattern.MatchString(name) {
			continue
		}
		body, err := readBounded(path)
		if err != nil {
			return nil, err
		}
		lib.byName[name] = body
	}
	return lib, nil
}

func readBounded(path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("reading skill: %w", err)
	}
	if info.Size() > MaxSkillBytes {
		return "", fmt.Errorf("skill %s is %d bytes; the limit is %d", path, info.Size(), MaxSkillBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading skill: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Names returns the loaded skill names, sorted.
func (l *Library) Names() []string {
	names := make([]string, 0, len(l.byName))
	for n := range l.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SystemPrompt returns the system prompt for a task that loads the named
// skills, in the order given; duplicates are loaded once. An unknown name
// returns an error wrapping ErrUnknown that lists the available skills.
func (l *Library) SystemPrompt(names []string) (string, error) {
	if len(names) == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("You are an AI agent executing a delegated task. Apply the following skills where they are relevant.")
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		body, ok := l.byName[n]
		if !ok {
			avail := "none are installed"
			if len(l.byName) > 0 {
				avail = "available: " + strings.Join(l.Names(), ", ")
			}
			return "", fmt.Errorf("%w %s (%s)", ErrUnknown, validate.Quote(n), avail)
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		fmt.Fprintf(&b, "\n\n<skill name=%q>\n%s\n</skill>", n, body)
	}
	return b.String(), nil
}
