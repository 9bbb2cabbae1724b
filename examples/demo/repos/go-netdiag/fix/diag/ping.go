// Package diag runs the diagnostic tools of the service.
package diag

import (
	"errors"
	"os/exec"
	"strings"
)

// Ping sends one ICMP echo to host and returns the output of ping.
func Ping(host string) ([]byte, error) {
	host = strings.TrimSpace(host)
	if host == "" || strings.HasPrefix(host, "-") {
		return nil, errors.New("no host given")
	}
	return exec.Command("ping", "-c", "1", "-W", "2", "--", host).CombinedOutput()
}
