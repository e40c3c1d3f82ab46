package skills_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/skills"
)

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
}

func TestLoadBothLayoutsAndBuildPrompt(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "git-master", "SKILL.md"), "---\nname: git-master\n---\nUse atomic commits.")
	writeFile(t, filepath.Join(dir, "review.md"), "Review carefully.\n")
	writeFile(t, filepath.Join(dir, "notes.txt"), "ignored")
	writeFile(t, filepath.Join(dir, "empty-dir", "README.md"), "no SKILL.md here")

	lib, err := skills.LoadFrom(nil, dir)
	require.NoError(t, err)
	require.Equal(t, []string{"git-master", "review"}, lib.Names())

	prompt, err := lib.SystemPrompt([]string{"review", "git-master", "review"})
	require.NoError(t, err)
	require.Less(t, strings.Index(prompt, "Review carefully."), strings.Index(prompt, "Use atomic commits."), "skills keep the requested order")
	require.Equal(t, 1, strings.Count(prompt, "Review carefully."), "duplicates load once")

	none, err := lib.SystemPrompt(nil)
	require.NoError(t, err)
	require.Empty(t, none)
}

func TestUnknownSkillNamesTheAvailableOnes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "review.md"), "x")
	lib, err := skills.LoadFrom(nil, dir)
	require.NoError(t, err)
	_, err = lib.SystemPrompt([]string{"review", "../../etc/passwd"})
	require.ErrorIs(t, err, skills.ErrUnknown)
	require.Contains(t, err.Error(), "available: review")
}

func TestOversizedSkillFails(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "huge.md"), strings.Repeat("x", skills.MaxSkillBytes+1))
	_, err := skills.LoadFrom(nil, dir)
	require.ErrorContains(t, err, "limit")

	writeFile(t, filepath.Join(dir, "huge.md"), strings.Repeat("x", skills.MaxSkillBytes))
	lib, err := skills.LoadFrom(nil, dir)
	require.NoError(t, err, "a skill of exactly the limit loads")
	require.Equal(t, []string{"huge"}, lib.Names())
}

// The binary carries the repository's skills/ directory: an orchestrator run
// where no skills directory exists (a container image, another working
// directory) still has them.
func TestBuiltinSkillsWithoutADirectory(t *testing.T) {
	t.Chdir(t.TempDir()) // no ./skills here
	lib, err := skills.Load(skills.DefaultDir)
	require.NoError(t, err, "the default directory may be missing")
	require.Subset(t, lib.Names(), []string{"code-review", "git-master", "technical-writing"})
	require.Empty(t, lib.FromDir())

	prompt, err := lib.SystemPrompt([]string{"code-review"})
	require.NoError(t, err)
	require.Contains(t, prompt, "When you review code:")

	lib, err = skills.Load("")
	require.NoError(t, err)
	require.Contains(t, lib.Names(), "code-review")
}

func TestDirectoryExtendsAndOverridesBuiltins(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "code-review", "SKILL.md"), "Our own review checklist.")
	writeFile(t, filepath.Join(dir, "house-style.md"), "Use the house style.")
	lib, err := skills.Load(dir)
	require.NoError(t, err)
	require.Subset(t, lib.Names(), []string{"code-review", "git-master", "technical-writing", "house-style"})
	require.Equal(t, []string{"code-review", "house-style"}, lib.FromDir())

	prompt, err := lib.SystemPrompt([]string{"code-review"})
	require.NoError(t, err)
	require.Contains(t, prompt, "Our own review checklist.", "the directory's skill wins")
	require.NotContains(t, prompt, "When you review code:")
}

func TestMissingDirectory(t *testing.T) {
	// The default directory (relative to the working directory) may be
	// missing; any other must exist.
	t.Chdir(t.TempDir())
	_, err := skills.LoadFrom(nil, skills.DefaultDir)
	require.NoError(t, err)

	missing := filepath.Join(t.TempDir(), "missing")
	_, err = skills.Load(missing)
	require.ErrorContains(t, err, "does not exist")
	require.ErrorContains(t, err, missing)

	file := filepath.Join(t.TempDir(), "file.md")
	writeFile(t, file, "x")
	_, err = skills.Load(file)
	require.ErrorContains(t, err, "not a directory")
}

func TestSymlinkedSkills(t *testing.T) {
	// A Kubernetes ConfigMap volume holds symlinks into a hidden directory.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "..data", "linked.md"), "Linked file.")
	writeFile(t, filepath.Join(dir, "..data", "linked-dir", "SKILL.md"), "Linked directory.")
	if err := os.Symlink(filepath.Join("..data", "linked.md"), filepath.Join(dir, "linked.md")); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	require.NoError(t, os.Symlink(filepath.Join("..data", "linked-dir"), filepath.Join(dir, "linked-dir")))
	require.NoError(t, os.Symlink("nowhere", filepath.Join(dir, "dangling.md")))
	lib, err := skills.LoadFrom(nil, dir)
	require.NoError(t, err)
	require.Equal(t, []string{"linked", "linked-dir"}, lib.Names())
}
