package deploy_test

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/stretchr/testify/require"
)

// root is the repository root, where the Dockerfile and
// docker-compose.yml live.
const root = ".."

var (
	binOnce sync.Once
	binPath string
	binErr  error
	// binDir holds the binary every test of this package shares: building
	// it takes a while, so it is built once (TestMain removes the
	// directory).
	binDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchyard-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// switchyardBinary returns the binary built with the Dockerfile's own
// build command from the context .dockerignore leaves (see
// TestDockerfileBuildsAsPlainGoBuild).
func switchyardBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	binOnce.Do(func() { binPath, binErr = buildLikeDockerfile() })
	require.NoError(t, binErr)
	return binPath
}

// ---------------------------------------------------------------------------
// Dockerfile

type instruction struct {
	keyword string // upper case: FROM, RUN, ...
	args    string
}

type stage struct {
	from, name   string
	instructions []instruction
}

type dockerfile struct {
	args   map[string]string // ARG defaults declared before the first FROM
	stages []stage
}

// readDockerfile reads the Dockerfile's instructions: continuation lines
// joined, comments dropped.
func readDockerfile() (dockerfile, error) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return dockerfile{}, err
	}
	df := dockerfile{args: map[string]string{}}
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if cur.Len() != 0 {
		return dockerfile{}, errors.New("the Dockerfile ends in a continuation line")
	}
	for _, l := range logical {
		kw, args, _ := strings.Cut(l, " ")
		in := instruction{keyword: strings.ToUpper(kw), args: strings.TrimSpace(args)}
		switch {
		case in.keyword == "FROM":
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0 && in.keyword == "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			df.args[name] = def
		case len(df.stages) > 0:
			st := &df.stages[len(df.stages)-1]
			st.instructions = append(st.instructions, in)
		}
	}
	return df, nil
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	df, err := readDockerfile()
	require.NoError(t, err)
	return df
}

func (df dockerfile) expand(s string) string {
	return os.Expand(s, func(k string) string { return df.args[k] })
}

func (st stage) all(keyword string) []string {
	var out []string
	for _, in := range st.instructions {
		if in.keyword == keyword {
			out = append(out, in.args)
		}
	}
	return out
}

// goBuildCommand returns the environment assignments and the words of the
// Dockerfile's `RUN ... go build ...` line.
func goBuildCommand(df dockerfile) (env, words []string, err error) {
	var runs []string
	for _, st := range df.stages {
		for _, r := range st.all("RUN") {
			if strings.Contains(r, "go build") {
				runs = append(runs, r)
			}
		}
	}
	if len(runs) != 1 {
		return nil, nil, fmt.Errorf("want one RUN with go build in the Dockerfile, found %d", len(runs))
	}
	all, err := shellWords(runs[0])
	if err != nil {
		return nil, nil, err
	}
	for len(all) > 0 && strings.HasPrefix(all[0], "--mount=") {
		all = all[1:]
	}
	for len(all) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(all[0]) {
		env, all = append(env, all[0]), all[1:]
	}
	for _, w := range all {
		if strings.ContainsAny(w, "$;&|`<>") {
			return nil, nil, fmt.Errorf("the go build line must be one plain command, without %q", w)
		}
	}
	if len(all) < 2 || all[0] != "go" || all[1] != "build" {
		return nil, nil, fmt.Errorf("the RUN line is not a go build: %q", runs[0])
	}
	return env, all, nil
}

// shellWords splits a command line the way sh does for plain words and
// single or double quotes (no expansions: the build line has none).
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, errors.New("unterminated double quote")
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// buildLikeDockerfile runs the Dockerfile's go build command, as a plain go
// build, in a copy of the build context .dockerignore leaves (COPY . .),
// writing the binary into binDir.
func buildLikeDockerfile() (string, error) {
	df, err := readDockerfile()
	if err != nil {
		return "", err
	}
	env, words, err := goBuildCommand(df)
	if err != nil {
		return "", err
	}
	ctxDir := filepath.Join(binDir, "context")
	if err := copyBuildContext(ctxDir); err != nil {
		return "", fmt.Errorf("copying the build context: %w", err)
	}
	out := filepath.Join(binDir, "switchyard")
	i := slices.Index(words, "-o")
	if i < 0 || i+1 >= len(words) {
		return "", errors.New("the go build line has no -o")
	}
	words[i+1] = out
	cmd := exec.Command("go", words[1:]...)
	cmd.Dir = ctxDir
	// No workspace: the build context holds only this module.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Env = append(cmd.Env, env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s (in the build context): %w\n%s", strings.Join(env, " "), strings.Join(words, " "), err, b)
	}
	return out, nil
}

// copyBuildContext copies what `docker build .` would send, given
// .dockerignore (with Docker's own pattern matcher), into dst.
func copyBuildContext(dst string) error {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	_ = f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if excluded {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	require.NotNil(t, m, "go.mod has no go line")
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	require.GreaterOrEqual(t, len(df.stages), 2, "a multi-stage build")

	builder := df.stages[0]
	require.Equal(t, "golang:"+goModVersion(t), df.expand(builder.from), "the builder's Go is go.mod's")

	final := df.stages[len(df.stages)-1]
	require.Equal(t, "gcr.io/distroless/static-debian12:nonroot", final.from)
	require.Equal(t, []string{`["/switchyard"]`}, final.all("ENTRYPOINT"))
	users := final.all("USER")
	require.NotEmpty(t, users)
	require.Contains(t, []string{"nonroot", "nonroot:nonroot", "65532", "65532:65532"}, users[len(users)-1], "runs as the non-root user")
	require.Contains(t, final.all("COPY"), "--from="+builder.name+" /out/switchyard /switchyard", "the final stage holds the binary the builder wrote")

	exposed := strings.Fields(strings.Join(final.all("EXPOSE"), " "))
	for _, port := range []string{"50051", "50052", "50053", "50080", "9464"} {
		require.Contains(t, exposed, port)
	}

	env, words, err := goBuildCommand(df)
	require.NoError(t, err)
	require.Contains(t, env, "CGO_ENABLED=0", "a static binary")
	require.Contains(t, words, "-trimpath")
	require.Equal(t, "./cmd/switchyard", words[len(words)-1])
}

func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	require.NoError(t, err)
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	require.NoError(t, err)
	pm, err := patternmatcher.New(patterns)
	require.NoError(t, err)
	for _, p := range []string{".git/config", "deploy/secrets/keyring", "deploy/secrets/orchestrator-token", "switchyard", "bin/switchyard"} {
		excluded, err := pm.MatchesOrParentMatches(p)
		require.NoError(t, err)
		require.True(t, excluded, "%s must not enter the build context", p)
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/switchyard/main.go", "skills/code-review/SKILL.md", "migrations/accountpool/00001_init.sql"} {
		excluded, err := pm.MatchesOrParentMatches(p)
		require.NoError(t, err)
		require.False(t, excluded, "the build needs %s", p)
	}
}

// The Dockerfile's build line, run as a plain go build with CGO_ENABLED=0
// on the build context .dockerignore leaves, builds a static binary that
// carries the skills and the migrations.
func TestDockerfileBuildsAsPlainGoBuild(t *testing.T) {
	bin := switchyardBinary(t)
	out, _ := exec.Command(bin, "health", "-h").CombinedOutput()
	require.Contains(t, string(out), "usage: switchyard health")

	if runtime.GOOS != "linux" {
		t.Skipf("the ELF checks need a linux binary; this is %s", runtime.GOOS)
	}
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary has no ELF interpreter")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	require.Empty(t, libs, "a static binary needs no shared library")
	require.Nil(t, f.Section(".symtab"), "-ldflags='-s -w' strips the symbol table")

	b, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.True(t, bytes.Contains(b, []byte("When you review code:")), "the code-review skill is embedded")
	require.True(t, bytes.Contains(b, []byte("CREATE ROLE switchyard_app")), "the migrations are embedded")
}
