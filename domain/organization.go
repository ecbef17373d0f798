package domain

// Organization is a tenant. Its name is unique platform-wide (claimed in OrgNameStream).
type Organization struct {
	id, name string
	version  uint64
}

// CreateOrganization decides the creation of an organization.
func CreateOrganization(orgID, name, createdBy string) (OrganizationCreated, OrgNameReserved, error) {
	var p problems
	checkID(&p, "org_id", orgID)
	checkName(&p, "name", name)
	checkUser(&p, "created_by", createdBy)
	if err := p.err(); err != nil {
		return OrganizationCreated{}, OrgNameReserved{}, err
	}
	return OrganizationCreated{OrgID: orgID, Name: name, CreatedBy: createdBy}, OrgNameReserved{OrgID: orgID, Name: name}, nil
}

// RehydrateOrganization rebuilds an organization from its stream.
func RehydrateOrganization(events []Recorded) (*Organization, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	o := &Organization{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *OrganizationCreated:
			o.id, o.name = ev.OrgID, ev.Name
		default:
			return nil, ErrUnknownEvent
		}
		o.version = r.StreamVersion
	}
	return o, nil
}

func (o *Organization) ID() string      { return o.id }
func (o *Organization) Name() string    { return o.name }
func (o *Organization) Version() uint64 { return o.version }
