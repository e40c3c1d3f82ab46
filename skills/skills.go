// Package skills embeds the default skills: the documents in this
// directory, one skill per entry, <name>/SKILL.md or <name>.md. They are
// compiled into the switchyard binary, so an orchestrator run anywhere (a
// container image holds nothing but the binary) can load them; a skills
// directory given at run time extends or overrides them
// (services/orchestrator/internal/skills).
//
// Add a skill by adding its file here; nothing else needs to change.
package skills

import (
	"embed"
	"io/fs"
)

// Only the skill documents are embedded: a skill directory's other files
// (scripts, references) are not part of the system prompt.
//
//go:embed */SKILL.md *.md
var files embed.FS

// FS returns the default skills, laid out as in this directory.
func FS() fs.FS { return files }
