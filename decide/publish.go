package decide

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalpel-dev/scalpel/schemas"
)

// publishTimeout bounds a publish whose context carries no deadline.
const publishTimeout = 5 * time.Second

// Publish records d on decision.<svc> with Nats-Msg-Id = the decision id, so that the same decision
// re-made after a crash, by a second decider or in a replay is stored once (the DECISIONS stream's
// duplicate window drops the copy).
func Publish(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, d *schemas.Decision) (*jetstream.PubAck, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%w: decision %s: %w", ErrInvalidInput, d.ID, err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode decision %s: %w", d.ID, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, publishTimeout)
		defer cancel()
	}
	ack, err := js.Publish(ctx, subj.Decision(d.Service), b, jetstream.WithMsgID(d.ID))
	if err != nil {
		return nil, fmt.Errorf("publish decision %s on %s: %w", d.ID, subj.Decision(d.Service), err)
	}
	return ack, nil
}
