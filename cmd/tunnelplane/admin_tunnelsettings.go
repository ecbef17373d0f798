package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// tunnelSettingFlags are the flags of a tunnel's labels and CORS setting (tunnels create and
// update; labels also scope access keys).
type tunnelSettingFlags struct {
	labels      []string
	clearLabels bool
	cors        string
	origins     []string
}

func (f *tunnelSettingFlags) addLabels(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.labels, "label", nil, "a label key=value (repeat); on update, the tunnel's labels become exactly these. Access keys created with --label call the tunnels that carry their labels; setting labels takes the right to share")
}

func (f *tunnelSettingFlags) addUpdate(cmd *cobra.Command) {
	f.addLabels(cmd)
	cmd.Flags().BoolVar(&f.clearLabels, "clear-labels", false, "remove all the tunnel's labels")
	cmd.Flags().StringVar(&f.cors, "cors", "", "cross-origin setting: off, passthrough (preflights go to the upstream without a credential), or origins (with --cors-origin)")
	cmd.Flags().StringArrayVar(&f.origins, "cors-origin", nil, "an origin whose pages may call the tunnel with a credential, like https://app.example.com (repeat; implies --cors origins)")
}

// labelMap is --label as a map (nil when not given).
func (f *tunnelSettingFlags) labelMap() (map[string]string, error) {
	if len(f.labels) == 0 {
		return nil, nil
	}
	return domain.ParseLabels(f.labels)
}

// patch sets the labels and CORS of p that the flags give; changed tells whether any did.
func (f *tunnelSettingFlags) patch(p *api.TunnelPatch) (changed bool, err error) {
	labels, err := f.labelMap()
	if err != nil {
		return false, err
	}
	switch {
	case f.clearLabels && labels != nil:
		return false, errors.New("--label and --clear-labels: give one")
	case f.clearLabels:
		labels = map[string]string{}
	}
	if labels != nil {
		p.Labels, changed = &labels, true
	}
	if len(f.origins) > 0 {
		if f.cors != "" && f.cors != domain.CORSOrigins {
			return false, errors.New("--cors-origin goes with --cors origins (or no --cors)")
		}
		f.cors = domain.CORSOrigins
	}
	if f.cors != "" {
		p.CORS, changed = &domain.TunnelCORS{Mode: f.cors, Origins: f.origins}, true
	}
	return changed, nil
}
