package siem

// DecodeEvent is decodeEvent, for the tests of package siem_test.
var DecodeEvent = decodeEvent
