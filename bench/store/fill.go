package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// AppendOrgs appends n organization.created events, 500 streams per append; the organizations
// are named o<first+i>, so names stay unique across calls that pass distinct firsts.
func AppendOrgs(ctx context.Context, st *eventstore.Store, first, n int) error {
	for done := 0; done < n; {
		k := min(500, n-done)
		appends := make([]eventstore.StreamAppend, k)
		for i := range appends {
			org := uuid.NewString()
			b, err := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("o%d", first+done+i), CreatedBy: "bench"})
			if err != nil {
				return err
			}
			appends[i] = eventstore.StreamAppend{StreamID: domain.OrgStream(org), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{{Type: domain.TypeOrganizationCreated, Payload: b}}}
		}
		if _, err := st.AppendMulti(ctx, appends...); err != nil {
			return fmt.Errorf("append organizations: %w", err)
		}
		done += k
	}
	return nil
}
