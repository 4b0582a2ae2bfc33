package schemas

import (
	"strings"

	"github.com/google/uuid"
)

// Namespace of every id scalpel derives, so that the same thing re-derived after a crash, by a second
// decider or in a replay gets the same id and is deduplicated by the broker.
var Namespace = uuid.MustParse("6f1c1a4e-3b0e-5c7a-9a57-5ca1bede0001")

// DeriveID returns a UUIDv5 of the parts joined by '\x1f' (unit separator, which names cannot contain).
func DeriveID(kind string, parts ...string) string {
	return uuid.NewSHA1(Namespace, []byte(kind+"\x1f"+strings.Join(parts, "\x1f"))).String()
}
