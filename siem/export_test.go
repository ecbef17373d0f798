package siem

// DecodeEvent is decodeEvent, for the tests of package siem_test.
func DecodeEvent(typ string, payload []byte) (any, error) {
	ev, _, err := decodeEvent(typ, payload)
	return ev, err
}

// ReleaseEvent hands back an event DecodeEvent returned, as a sink does after formatting it.
func ReleaseEvent(typ string, ev any) {
	d := decoded{event: ev, pool: eventPools[typ]}
	d.release()
}
