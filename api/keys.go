package api

import (
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Key is one key of the log's key history: the control plane's log and token keys and the nodes'
// event keys, with their validity in log positions.
type Key struct {
	eventstore.KeyInfo
	// State is active (in force), rotated (replaced; a rotated token key still verifies tokens for
	// a grace period) or revoked.
	State string `json:"state"`
	// ChangedAt is when the key was added, rotated or revoked.
	ChangedAt *time.Time `json:"changed_at,omitempty"`
}

func (s *Server) listKeys(c echo.Context) error {
	q, err := newQuery(c, "purpose", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("keys")
	if err != nil {
		return err
	}
	purpose, err := q.oneOf("purpose", "", string(eventstore.PurposeLog), string(eventstore.PurposeToken), string(eventstore.PurposeNode))
	if err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjKeys, commands.ActRead); err != nil {
		return err
	}
	// The key history is read from the log itself, not from a projection.
	if err := s.waitFor(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	infos, err := s.cfg.Log.Keys(ctx)
	if err != nil {
		return err
	}
	hist, err := readKeyHistory(ctx, s.cfg.Log)
	if err != nil {
		return err
	}
	sort.Slice(infos, func(i, j int) bool {
		if infos[i].ValidFrom != infos[j].ValidFrom {
			return infos[i].ValidFrom < infos[j].ValidFrom
		}
		return infos[i].KeyID < infos[j].KeyID
	})
	var afterFrom int64 = -1
	afterID := ""
	if p.cursor != nil {
		if afterFrom, err = p.cursorInt(0); err != nil {
			return err
		}
		if afterID, err = p.cursorString(1); err != nil {
			return err
		}
	}
	var rows []Key
	for _, k := range infos {
		if purpose != "" && string(k.Purpose) != purpose {
			continue
		}
		if p.cursor != nil && (int64(k.ValidFrom) < afterFrom || (int64(k.ValidFrom) == afterFrom && k.KeyID <= afterID)) {
			continue
		}
		key := Key{KeyInfo: k, State: "active"}
		if k.ValidUntil != nil {
			key.State = "revoked"
		}
		if h := hist[k.KeyID]; h != nil {
			key.State = h.state
			at := h.changedAt
			key.ChangedAt = &at
		}
		rows = append(rows, key)
		if len(rows) > p.limit {
			break
		}
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(k Key) []any { return []any{k.ValidFrom, k.KeyID} }))
}

// RotationInput is the body of POST /keys/rotations.
type RotationInput struct {
	// Purpose is "log" or "token".
	Purpose string `json:"purpose"`
}

func (s *Server) rotateKey(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in RotationInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RotateSigningKey.Handle(c.Request().Context(), commands.RotateSigningKey{Purpose: in.Purpose})
	if err != nil {
		return err
	}
	if in.Purpose == string(eventstore.PurposeToken) {
		// Tokens minted from now on carry the new key id; know it before they arrive.
		if err := s.auth.internal.refresh(c.Request().Context(), true); err != nil {
			s.log.Warn("token keys not refreshed after a rotation", "error", err, "request_id", requestIDsFrom(c).request)
		}
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/keys")
	return s.written(c, http.StatusCreated, res)
}
