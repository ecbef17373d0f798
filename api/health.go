package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/projections"
)

type projectionStatus = projections.Status

// Readiness is the body of /readyz.
type Readiness struct {
	Ready       bool                 `json:"ready"`
	Database    string               `json:"database"`
	Projections []projections.Status `json:"projections,omitempty"`
	Problems    []string             `json:"problems,omitempty"`
}

// healthz says the process is up and serving; nothing else.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether this instance should get traffic: the database answers and every read
// model is running and within ReadyMaxLag records of the log head.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	r := Readiness{Ready: true, Database: "ok"}
	if err := s.cfg.ReadModels.Ping(ctx); err != nil {
		r.Ready, r.Database = false, "unreachable"
		r.Problems = append(r.Problems, "database: "+err.Error())
	} else if sts, err := s.cfg.Runner.Statuses(ctx); err != nil {
		r.Ready = false
		r.Problems = append(r.Problems, "projections: "+err.Error())
	} else {
		r.Projections = sts
		for _, st := range sts {
			switch {
			case !st.Running && st.LastError != "":
				r.Ready = false
				r.Problems = append(r.Problems, "projection "+st.Name+" stopped: "+st.LastError)
			case !st.Running:
				r.Ready = false
				r.Problems = append(r.Problems, "projection "+st.Name+" is not running")
			case st.Lag > s.cfg.ReadyMaxLag:
				r.Ready = false
				r.Problems = append(r.Problems, "projection "+st.Name+" is behind the log")
			}
		}
	}
	status := http.StatusOK
	if !r.Ready {
		status = http.StatusServiceUnavailable
		c.Response().Header().Set(echo.HeaderRetryAfter, "1")
	}
	return c.JSON(status, r)
}
