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

	lib, err := skills.Load(dir)
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
	lib, err := skills.Load(dir)
	require.NoError(t, err)
	_, err = lib.SystemPrompt([]string{"review", "../../etc/passwd"})
	require.ErrorIs(t, err, skills.ErrUnknown)
	require.Contains(t, err.Error(), "available: review")
}

func TestMissingDirectoryIsEmptyAndOversizedSkillFails(t *testing.T) {
	lib, err := skills.Load(filepath.Join(t.TempDir(), "missing"))
	require.NoError(t, err)
	require.Empty(t, lib.Names())

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "huge.md"), strings.Repeat("x", skills.MaxSkillBytes+1))
	_, err = skills.Load(dir)
	require.ErrorContains(t, err, "limit")
}
