// Package wsconn turns a gorilla/websocket connection into a net.Conn carrying one byte stream in
// binary messages, so that SSH can run over it.
//
// It owns the framing of outgoing data and the reassembly of incoming messages into a stream,
// write coalescing, deadlines and buffer pooling. It knows nothing about SSH, tunnels, tokens or
// HTTP routing, and must not: the node and the agent build those on top.
//
// Why it writes frames itself: every SSH packet reaches Write as two or three calls (x/crypto/ssh
// writes through a 4 KiB bufio.Writer and flushes per packet). Sent one WebSocket message each,
// that is two or three frames and syscalls per packet. Write therefore only copies into pooled
// fixed-size chunks and returns; a flusher goroutine, which exists only while data is queued,
// sends everything queued as one frame with one writev. The SSH writer keeps encrypting while the
// flusher writes, and under load many packets share a frame. A Write on a connection that has
// been quiet for a moment sends its frame itself instead: a lone request or a token of a stream
// then skips the hand-off to another goroutine.
//
// On the server side (the node, where the heavy agent-to-node direction arrives) frames are
// parsed here (reader.go): unmasking runs eight bytes at a time, and reads go through a big
// pooled buffer while data streams but through a small inline one when the connection idles.
// On the client side gorilla keeps reading, because its buffered reader may already hold bytes
// that followed the handshake response. gorilla does both handshakes.
package wsconn
