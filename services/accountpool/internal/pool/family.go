package pool

import "strings"

// Family is a model family. Rate limits and fallback prices are per family,
// because Anthropic meters each model class separately.
type Family string

// Model families.
const (
	FamilyOpus    Family = "opus"
	FamilySonnet  Family = "sonnet"
	FamilyHaiku   Family = "haiku"
	FamilyDefault Family = "default"
)

// Families returns every family, in display order.
func Families() []Family { return []Family{FamilyOpus, FamilySonnet, FamilyHaiku, FamilyDefault} }

// FamilyOf returns the family of a model name such as
// "claude-sonnet-4-5-20250929"; a name that names no known family (or an
// empty one) is FamilyDefault.
func FamilyOf(model string) Family {
	m := strings.ToLower(model)
	switch {
	case strings.Contains(m, "opus"):
		return FamilyOpus
	case strings.Contains(m, "sonnet"):
		return FamilySonnet
	case strings.Contains(m, "haiku"):
		return FamilyHaiku
	default:
		return FamilyDefault
	}
}

func validFamily(f Family) bool {
	switch f {
	case FamilyOpus, FamilySonnet, FamilyHaiku, FamilyDefault:
		return true
	}
	return false
}

// numFamilies is the number of model families; familyIndex maps each to
// 0..numFamilies-1 so per-family records can live in arrays.
const numFamilies = 4

func (f Family) index() int {
	switch f {
	case FamilyOpus:
		return 0
	case FamilySonnet:
		return 1
	case FamilyHaiku:
		return 2
	default:
		return 3
	}
}
