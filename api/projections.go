package api

import (
	"net/http"
	"sort"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
)

func (s *Server) listProjections(c echo.Context) error {
	q, err := newQuery(c, "limit", "cursor")
	if err != nil {
		return err
	}
	p, err := q.page("projections")
	if err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjProjections, commands.ActRead); err != nil {
		return err
	}
	sts, err := s.cfg.Runner.Statuses(c.Request().Context())
	if err != nil {
		return err
	}
	sort.Slice(sts, func(i, j int) bool { return sts[i].Name < sts[j].Name })
	after := ""
	if p.cursor != nil {
		if after, err = p.cursorString(0); err != nil {
			return err
		}
	}
	rows := sts[:0]
	for _, st := range sts {
		if st.Name > after {
			rows = append(rows, st)
		}
	}
	if len(rows) > p.limit+1 {
		rows = rows[:p.limit+1]
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(st projectionStatus) []any { return []any{st.Name} }))
}

// rebuildProjection replays the whole log into a fresh generation of a read model and swaps it in
// (readers keep the old one until the swap). It answers when the swap is done.
func (s *Server) rebuildProjection(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjProjections, commands.ActRebuild); err != nil {
		return err
	}
	name := c.Param("name")
	st, err := s.cfg.Runner.Rebuild(c.Request().Context(), name, nil)
	if err != nil {
		return err
	}
	s.log.Info("projection rebuilt", "projection", name, "generation", st.Generation, "position", st.Position,
		"actor", actorOf(c).ID, "request_id", requestIDsFrom(c).request, "correlation_id", requestIDsFrom(c).correlation)
	return c.JSON(http.StatusOK, st)
}
