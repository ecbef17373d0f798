package api

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
	"github.com/tunnelplane/tunnelplane/domain"
)

// Exports runs evidence exports in the background (an *exportjobs.Manager).
type Exports interface {
	Submit(req exportjobs.Request) (exportjobs.Job, error)
	Get(id string) (exportjobs.Job, error)
	List(keep func(exportjobs.Job) bool) []exportjobs.Job
	Bundle(id string) (io.ReadSeekCloser, exportjobs.Job, error)
}

// ExportsOf adapts an *exportjobs.Manager to Exports.
func ExportsOf(m *exportjobs.Manager) Exports { return managerExports{m} }

type managerExports struct{ *exportjobs.Manager }

func (m managerExports) Bundle(id string) (io.ReadSeekCloser, exportjobs.Job, error) {
	f, j, err := m.Manager.Bundle(id)
	if f == nil {
		return nil, j, err
	}
	return f, j, err
}

// ExportInput is the body of POST /exports: a window of the log, as positions or RFC 3339 times
// (a JSON number or string each), and optionally an organization (name or id).
type ExportInput struct {
	From Bound  `json:"from"`
	To   Bound  `json:"to"`
	Org  string `json:"org,omitempty"`
}

// Bound is a window bound: a position (a JSON number, or a string of digits) or an RFC 3339 time.
type Bound string

// UnmarshalJSON takes a number or a string.
func (b *Bound) UnmarshalJSON(raw []byte) error {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		*b = Bound(s)
		return nil
	}
	var n uint64
	if err := json.Unmarshal(raw, &n); err != nil {
		return err
	}
	*b = Bound(strconv.FormatUint(n, 10))
	return nil
}

// parse reads a bound: a position or a time.
func (b Bound) parse(field string) (uint64, *time.Time, error) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil, invalid(field, "is required: a position or an RFC 3339 time")
	}
	if p, err := strconv.ParseUint(s, 10, 63); err == nil {
		return p, nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, nil, invalid(field, "must be a position or an RFC 3339 time")
	}
	return 0, &t, nil
}

// window checks an export's window against the log: from ≤ to, positions the log holds.
func (s *Server) window(c echo.Context, in ExportInput) (evidence.Window, error) {
	var w evidence.Window
	var err error
	if w.From, w.FromTime, err = in.From.parse("from"); err != nil {
		return w, err
	}
	if w.To, w.ToTime, err = in.To.parse("to"); err != nil {
		return w, err
	}
	switch {
	case (w.FromTime == nil) != (w.ToTime == nil):
		return w, invalid("to", "must be of the same kind as from: both positions or both times")
	case w.FromTime != nil && w.FromTime.After(*w.ToTime):
		return w, invalid("to", "is before from")
	case w.FromTime == nil && w.From > w.To:
		return w, invalid("to", "is before from")
	}
	if w.FromTime == nil {
		head, err := s.cfg.Log.Head(c.Request().Context())
		if err != nil {
			return w, err
		}
		if w.To >= head {
			return w, invalid("to", "is past the log's last position %d", int64(head)-1)
		}
	}
	return w, nil
}

// createExport queues an evidence export: the whole log for a superadmin, an organization's for
// its owners, admins and auditors (who may read its audit trail).
func (s *Server) createExport(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in ExportInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	w, err := s.window(c, in)
	if err != nil {
		return err
	}
	if in.Org == "" || in.Org == domain.PlatformOrg {
		err = s.platform(c, commands.ObjAudit, commands.ActRead)
	} else {
		w.OrgID, err = s.orgFor(c, in.Org, commands.ObjAudit, commands.ActRead, true)
	}
	if err != nil {
		return err
	}
	if s.cfg.Exports == nil {
		return exportjobs.ErrStopped
	}
	a := actorOf(c)
	j, err := s.cfg.Exports.Submit(exportjobs.Request{Window: w, From: string(in.From), To: string(in.To), Actor: a.ID,
		RequestID: a.RequestID, CorrelationID: a.CorrelationID})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/exports/"+j.ID)
	return c.JSON(http.StatusAccepted, j)
}

// exportFor returns an export the caller may see: a whole-log export a superadmin's, an
// organization's its owners', admins' and auditors' (403 for others, as elsewhere).
func (s *Server) exportFor(c echo.Context) (exportjobs.Job, error) {
	if s.cfg.Exports == nil {
		return exportjobs.Job{}, exportjobs.ErrStopped
	}
	id := c.Param("id")
	if !domain.ValidID(id) {
		return exportjobs.Job{}, invalid("id", "must be a UUID")
	}
	j, err := s.cfg.Exports.Get(id)
	if err != nil {
		return j, err
	}
	if j.OrgID == "" {
		err = s.platform(c, commands.ObjAudit, commands.ActRead)
	} else {
		_, err = s.orgFor(c, j.OrgID, commands.ObjAudit, commands.ActRead, true)
	}
	return j, err
}

func (s *Server) getExport(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	j, err := s.exportFor(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, j)
}

// listExports lists this instance's exports, newest first: an organization's (org), or every
// one (org "*", superadmins).
func (s *Server) listExports(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	org, err := s.scope(c, q.str("org"), commands.ObjAudit, commands.ActRead)
	if err != nil {
		return err
	}
	if s.cfg.Exports == nil {
		return exportjobs.ErrStopped
	}
	items := s.cfg.Exports.List(func(j exportjobs.Job) bool { return org == domain.PlatformOrg || j.OrgID == org })
	return c.JSON(http.StatusOK, List[exportjobs.Job]{Items: items})
}

// downloadExport sends a finished export's bundle, with its length and SHA-256 (Repr-Digest,
// RFC 9530; the same hash export.created recorded).
func (s *Server) downloadExport(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	j, err := s.exportFor(c)
	if err != nil {
		return err
	}
	f, j, err := s.cfg.Exports.Bundle(j.ID)
	if err != nil {
		return err
	}
	defer f.Close()
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/zstd")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="export-`+j.ID+`.tar.zst"`)
	if sum, err := hex.DecodeString(j.BundleSHA256); err == nil {
		h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":")
	}
	h.Set("X-Bundle-SHA256", j.BundleSHA256)
	modified := time.Time{}
	if j.FinishedAt != nil {
		modified = *j.FinishedAt
	}
	http.ServeContent(c.Response(), c.Request(), "", modified, f)
	return nil
}

// exportProblem classifies the errors of exportjobs (for classify).
func exportProblem(err error) (classified, bool) {
	switch {
	case errors.Is(err, exportjobs.ErrQueueFull):
		return classified{status: http.StatusTooManyRequests, slug: "export-queue-full",
			detail: "as many exports wait as the queue holds; ask again in a minute"}, true
	case errors.Is(err, exportjobs.ErrStopped):
		return classified{status: http.StatusServiceUnavailable, slug: "exports-unavailable",
			detail: "this control plane instance runs no exports right now; retry later"}, true
	case errors.Is(err, exportjobs.ErrNoBundle):
		return classified{status: http.StatusConflict, slug: "no-bundle", detail: err.Error()}, true
	}
	return classified{}, false
}
