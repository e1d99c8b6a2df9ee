//go:build !unix

package proxy

import "net"

// canPark is false here: there is no peek-without-reading wait, so idle
// connections stay with the engine.
const canPark = false

func waitReadable(net.Conn) bool { return false }

func fileLimit() (uint64, bool) { return 0, false }
