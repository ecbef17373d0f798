package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
)

// accessLogCommands are the tunnel's per-call access records: set-access-log and access. org is
// the tunnels command's --org.
func (a *adminClient) accessLogCommands(org *string) []*cobra.Command {
	set := &cobra.Command{
		Use:   "set-access-log ID|NAME calls|windows",
		Short: "What the tunnel's nodes report of its calls: calls (a record per call) or windows (usage totals, the default)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.tunnelID(cmd.Context(), *org, args[0])
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "set the access log of tunnel", http.MethodPut, "/api/v1/tunnels/"+id+"/access-log", orgQuery(*org),
				api.AccessLogInput{AccessLog: args[1]})
			return err
		},
	}
	var from, to, caller string
	var status, limit int
	access := &cobra.Command{
		Use:   "access ID|NAME",
		Short: "The tunnel's call records, oldest first: who called which route, with what result",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.tunnelID(cmd.Context(), *org, args[0])
			if err != nil {
				return err
			}
			q := orgQuery(*org)
			for name, v := range map[string]string{"from": from, "to": to, "caller": caller} {
				if v != "" {
					q.Set(name, v)
				}
			}
			if status != 0 {
				q.Set("status", strconv.Itoa(status))
			}
			if limit < 0 {
				return fmt.Errorf("--limit %d: give a count, or 0 for all", limit)
			}
			items, err := listAll[api.AccessCall](cmd.Context(), a, "/api/v1/tunnels/"+id+"/access", q, limit)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, c := range items {
				who := c.CallerKind
				if c.CallerID != "" {
					who += ":" + c.CallerID
				}
				rows[i] = []string{c.At.UTC().Format(time.RFC3339Nano), who, c.Method, c.Route, strconv.Itoa(int(c.Status)),
					fmt.Sprintf("%d / %d", c.BytesIn, c.BytesOut), (time.Duration(c.DurationUS) * time.Microsecond).String(), c.NodeID}
			}
			return a.table(items, "AT\tCALLER\tMETHOD\tROUTE\tSTATUS\tBYTES IN / OUT\tDURATION\tNODE", rows)
		},
	}
	access.Flags().StringVar(&from, "from", "", "calls that began at or after this RFC 3339 time")
	access.Flags().StringVar(&to, "to", "", "calls that began before this RFC 3339 time")
	access.Flags().StringVar(&caller, "caller", "", "a user id or an access key id")
	access.Flags().IntVar(&status, "status", 0, "only calls answered with this status")
	access.Flags().IntVar(&limit, "limit", 100, "at most this many (0: all)")
	return []*cobra.Command{set, access}
}
