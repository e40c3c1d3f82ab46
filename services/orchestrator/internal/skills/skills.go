// Package skills loads the skill documents that DelegateTask can add to a
// task's system prompt.
//
// The library has two layers. The built-in skills are the repository's
// skills/ directory, embedded in the binary (package
// github.com/switchyard-dev/switchyard/skills). The skills directory
// (the orchestrator's SkillsDir, SWITCHYARD_SKILLS_DIR, -skills-dir) extends
// them, and a skill in it replaces the built-in skill of the same name.
//
// Either layer holds one skill per entry, in either layout:
//
//	<dir>/<name>/SKILL.md   (the Agent Skills layout; YAML front matter allowed)
//	<dir>/<name>.md
//
// The default directory, DefaultDir ("skills", relative to the working
// directory), may be missing: then only the built-in skills are loaded, as
// when the binary runs outside the repository. A directory named otherwise
// must exist, so that a mistyped path or a missing volume fails the start
// instead of silently serving the built-in skills alone.
//
// The library is read once at start-up so the hot path does no file I/O;
// restart the orchestrator to pick up changed skills.
package skills

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/switchyard-dev/switchyard/pkg/validate"
	builtin "github.com/switchyard-dev/switchyard/skills"
)

// MaxSkillBytes bounds one skill document.
const MaxSkillBytes = 256 << 10

// DefaultDir is the skills directory used when none is configured; unlike
// any other, it may be missing.
const DefaultDir = "skills"

// ErrUnknown is returned for a skill name that is not in the library.
var ErrUnknown = errors.New("unknown skill")

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Library is an immutable set of loaded skills.
type Library struct {
	byName map[string]string
	// fromDir lists the skills the directory supplied, overriding ones
	// included.
	fromDir []string
}

// Load returns the built-in skills extended or overridden by the skills in
// dir ("" for none). A missing dir is an error unless dir is DefaultDir; an
// unreadable or oversized skill is an error.
func Load(dir string) (*Library, error) {
	return LoadFrom(builtin.FS(), dir)
}

// LoadFrom is Load with the given built-in skills (nil for none).
func LoadFrom(builtins fs.FS, dir string) (*Library, error) {
	lib := &Library{byName: map[string]string{}}
	if builtins != nil {
		if _, err := lib.add(builtins, "built-in skill "); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		return lib, nil
	}
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && dir == DefaultDir:
		return lib, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("skills directory %s does not exist (a skills directory other than the default %q must exist; the built-in skills need none)", dir, DefaultDir)
	case err != nil:
		return nil, fmt.Errorf("reading skills directory: %w", err)
	case !info.IsDir():
		return nil, fmt.Errorf("skills directory %s is not a directory", dir)
	}
	names, err := lib.add(os.DirFS(dir), dir+string(os.PathSeparator))
	if err != nil {
		return nil, err
	}
	lib.fromDir = names
	return lib, nil
}

// add loads every skill at the root of fsys, replacing loaded ones of the
// same name, and returns the names it loaded. prefix names fsys in errors.
func (l *Library) add(fsys fs.FS, prefix string) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading skills directory %s: %w", strings.TrimSuffix(prefix, string(os.PathSeparator)), err)
	}
	var loaded []string
	for _, e := range entries {
		name, file := "", ""
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			// A symlinked skill (a Kubernetes ConfigMap volume is all
			// symlinks) counts as what it points at.
			info, err := fs.Stat(fsys, e.Name())
			if err != nil {
				continue
			}
			isDir = info.IsDir()
		}
		switch {
		case isDir:
			name, file = e.Name(), path.Join(e.Name(), "SKILL.md")
			if _, err := fs.Stat(fsys, file); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		case strings.HasSuffix(e.Name(), ".md"):
			name, file = strings.TrimSuffix(e.Name(), ".md"), e.Name()
		default:
			continue
		}
		if !namePattern.MatchString(name) {
			continue
		}
		body, err := readBounded(fsys, file, prefix)
		if err != nil {
			return nil, err
		}
		l.byName[name] = body
		if !slices.Contains(loaded, name) {
			loaded = append(loaded, name)
		}
	}
	return loaded, nil
}

func readBounded(fsys fs.FS, file, prefix string) (string, error) {
	f, err := fsys.Open(file)
	if err != nil {
		return "", fmt.Errorf("reading skill: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSkillBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading skill %s%s: %w", prefix, file, err)
	}
	if len(b) > MaxSkillBytes {
		return "", fmt.Errorf("skill %s%s is larger than the limit of %d bytes", prefix, file, MaxSkillBytes)
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

// FromDir returns the names of the skills the skills directory supplied
// (including those that replaced a built-in skill), sorted.
func (l *Library) FromDir() []string {
	names := slices.Clone(l.fromDir)
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
