package delegate

import (
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// protoStruct builds the Struct that protojson's encoding of m decodes to,
// directly from m's fields instead of through JSON text: the task's
// stored result is built once per task, and the round trip through
// protojson was 5–6 % of the Orchestrator's CPU. It covers what the
// orchestrator's messages hold — scalars, enums, nested messages and
// repeated fields — with protojson's mapping (JSON field names, populated
// fields only, 64-bit integers as decimal strings, enum names, NaN and
// infinities as strings) and reports false for anything else (maps,
// bytes, floats, well-known types), for which the caller takes the
// protojson path.
func protoStruct(m protoreflect.Message) (*structpb.Struct, bool) {
	fields := make(map[string]*structpb.Value, m.Descriptor().Fields().Len())
	ok := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var pv *structpb.Value
		switch {
		case fd.IsMap():
			ok = false
		case fd.IsList():
			l := v.List()
			vals := make([]*structpb.Value, l.Len())
			for i := range vals {
				if vals[i], ok = protoValue(fd, l.Get(i)); !ok {
					break
				}
			}
			pv = structpb.NewListValue(&structpb.ListValue{Values: vals})
		default:
			pv, ok = protoValue(fd, v)
		}
		if ok {
			fields[fd.JSONName()] = pv
		}
		return ok
	})
	return &structpb.Struct{Fields: fields}, ok
}

// protoValue is one value of field fd (an element, for a repeated field).
func protoValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (*structpb.Value, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return structpb.NewBoolValue(v.Bool()), true
	case protoreflect.StringKind:
		return structpb.NewStringValue(v.String()), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return structpb.NewNumberValue(float64(v.Int())), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return structpb.NewNumberValue(float64(v.Uint())), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return structpb.NewStringValue(strconv.FormatInt(v.Int(), 10)), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return structpb.NewStringValue(strconv.FormatUint(v.Uint(), 10)), true
	case protoreflect.DoubleKind:
		switch f := v.Float(); {
		case math.IsNaN(f):
			return structpb.NewStringValue("NaN"), true
		case math.IsInf(f, 1):
			return structpb.NewStringValue("Infinity"), true
		case math.IsInf(f, -1):
			return structpb.NewStringValue("-Infinity"), true
		default:
			return structpb.NewNumberValue(f), true
		}
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return structpb.NewStringValue(string(ev.Name())), true
		}
		return structpb.NewNumberValue(float64(v.Enum())), true
	case protoreflect.MessageKind:
		if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
			return nil, false // well-known types have JSON forms of their own
		}
		s, ok := protoStruct(v.Message())
		return structpb.NewStructValue(s), ok
	default:
		return nil, false
	}
}
