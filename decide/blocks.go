package decide

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// BlockStore keeps the sources (or artefact references) of blocks and functions per version in the
// scalpel_blocks object store, under <svc>/<comp>[/<block>]@<version>, with their sha256, so a
// person can see what a rollback went back to and a deployer can fetch it.
type BlockStore struct {
	os jetstream.ObjectStore
}

// NewBlockStore returns a block store over the scalpel_blocks object store.
func NewBlockStore(os jetstream.ObjectStore) *BlockStore { return &BlockStore{os: os} }

// Put stores r as the source of svc/comp[/block]@version and returns the object name (the
// DeployBlock's source_ref) and "sha256:<hex>" (its hash). Storing the same bytes again is harmless.
func (s *BlockStore) Put(ctx context.Context, svc, comp, block, version string, r io.Reader) (ref, hash string, err error) {
	name := schemas.BlockObjectName(svc, comp, block, version)
	h := sha256.New()
	info, err := s.os.Put(ctx, jetstream.ObjectMeta{Name: name, Description: "source of " + name}, io.TeeReader(r, h))
	if err != nil {
		return "", "", fmt.Errorf("store %s: %w", name, err)
	}
	sum := "sha256:" + hex.EncodeToString(h.Sum(nil))
	_ = info
	return name, sum, nil
}

// Get returns the stored source of svc/comp[/block]@version.
func (s *BlockStore) Get(ctx context.Context, svc, comp, block, version string) ([]byte, error) {
	name := schemas.BlockObjectName(svc, comp, block, version)
	b, err := s.os.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
