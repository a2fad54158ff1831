// vcsim for the vmshift tests: govmomi's vSphere API simulator with TLS on 127.0.0.1, a fixed
// login, no VMs of its own, and VirtualMachine.ExportVm (vcsim_export.go). It prints one JSON
// line (the SDK URL) and serves until stdin closes, so a test that dies takes the simulator
// with it.
//
// Built by tests/vsphere/simulator.py from Debian's golang-github-vmware-govmomi-dev in GOPATH
// mode (no network).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"net/url"
	"os"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	kind := flag.String("model", "esx", "esx or vpx")
	user := flag.String("user", "root", "the one user name the simulator accepts")
	password := flag.String("password", "", "its password")
	exportDir := flag.String("exports", "", "the images export leases serve (vcsim_export.go)")
	flag.Parse()

	model := simulator.ESX()
	if *kind == "vpx" {
		model = simulator.VPX()
		model.Cluster = 1
		model.ClusterHost = 1
		model.Host = 0
	}
	model.Machine = 0 // the tests register their own VMs
	model.Autostart = false
	defer model.Remove()
	if err := model.Create(); err != nil {
		panic(err)
	}
	// With user info in the listen URL the simulator accepts only that login.
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *password)}
	model.Service.TLS = new(tls.Config)
	server := model.Service.NewServer()
	defer server.Close()
	// No request has come yet: the URL is printed below.
	server.Config.Handler = newExports(*exportDir).handler(server.Config.Handler)

	address := *server.URL
	address.User = nil
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"url": address.String()})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
