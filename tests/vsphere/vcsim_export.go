// VirtualMachine.ExportVm for the vmshift tests: govmomi's simulator 0.24 has HttpNfcLease
// (for ImportVApp) but no ExportVm, and its VirtualMachine type cannot take new methods from
// outside its package. The simulator dispatches a SOAP call by reflection on the object its
// `_this` names, so exportHandler sends an ExportVm call to a vmExporter object (registered
// under the VM's id with type "VmExporter") and lets the simulator do the rest: the session
// check, the decoding, the fault encoding. Everything else goes to the simulator untouched.
//
// A lease serves, for each disk `[DATASTORE] PATH` of the VM, the file EXPORTS/DATASTORE/PATH
// that the test put there (a streamOptimized VMDK, as ESXi serves), on
// https://*/vmshift-nfc/LEASE/disk-N.vmdk, to the session that made the lease only. A disk with
// no such file puts the lease in the error state, naming the disk.
//
// GET /vmshift/leases answers with every lease made so far: its VM, state (ready, done,
// aborted, error), last progress percent, the number of HttpNfcLeaseProgress calls and the
// device keys of the disks sent.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	exporterType = "VmExporter"
	nfcPath      = "/vmshift-nfc/"
	leaseReady   = 300 * time.Millisecond // leases start "initializing", as vSphere's do
)

// leaseRecord is what /vmshift/leases reports about one lease.
type leaseRecord struct {
	VM            string   `json:"vm"`
	State         string   `json:"state"`
	Progress      int32    `json:"progress"`
	ProgressCalls int      `json:"progress_calls"`
	Sent          []string `json:"sent"` // the device keys whose file was sent whole
}

type exports struct {
	dir    string // EXPORTS: the images the leases serve
	mu     sync.Mutex
	next   int
	leases map[string]*exportLease // by id
}

func newExports(dir string) *exports {
	return &exports{dir: dir, leases: make(map[string]*exportLease)}
}

// exportLease is an HttpNfcLease (the embedded mo type comes first, so the property collector
// reads it) with the files it serves.
type exportLease struct {
	mo.HttpNfcLease
	owner   *exports
	id      string
	session string            // the key of the session that made it: the only one it serves
	files   map[string]string // by URL name
	keys    map[string]string // device key by URL name
	record  leaseRecord
}

// vmExporter takes the ExportVm calls of one VM (its id is the VM's).
type vmExporter struct {
	Self  types.ManagedObjectReference
	owner *exports
}

func (x *vmExporter) Reference() types.ManagedObjectReference { return x.Self }

var thisVM = regexp.MustCompile(`(<_this[^>]*type=")VirtualMachine(")`)

// handler wraps the simulator's HTTP handler.
func (e *exports) handler(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(nfcPath, e.serveNFC)
	mux.HandleFunc("/vmshift/leases", e.serveLeases)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if bytes.Contains(body, []byte("<ExportVm")) {
				body = e.route(body)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
	return mux
}

// route points an ExportVm call at the exporter of its VM, registering one on first use.
func (e *exports) route(body []byte) []byte {
	m := regexp.MustCompile(`<_this[^>]*type="VirtualMachine"[^>]*>([^<]+)</_this>`).FindSubmatch(body)
	if m == nil {
		return body
	}
	ref := types.ManagedObjectReference{Type: exporterType, Value: string(m[1])}
	if simulator.Map.Get(ref) == nil {
		simulator.Map.Put(&vmExporter{Self: ref, owner: e})
	}
	return thisVM.ReplaceAll(body, []byte("${1}"+exporterType+"${2}"))
}

func (x *vmExporter) ExportVm(ctx *simulator.Context, req *types.ExportVm) soap.HasFault {
	body := new(methods.ExportVmBody)
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: req.This.Value}
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: ref})
		return body
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		body.Fault_ = simulator.Fault("the VM is not powered off", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOff,
			ExistingState:  vm.Runtime.PowerState,
		})
		return body
	}
	lease := x.owner.newLease(ctx, vm)
	body.Res = &types.ExportVmResponse{Returnval: lease.Self}
	return body
}

func (e *exports) newLease(ctx *simulator.Context, vm *simulator.VirtualMachine) *exportLease {
	e.mu.Lock()
	e.next++
	id := fmt.Sprintf("vmshift-export-%d", e.next)
	e.mu.Unlock()
	lease := &exportLease{
		owner:   e,
		id:      id,
		session: ctx.Session.Key,
		files:   make(map[string]string),
		keys:    make(map[string]string),
		record:  leaseRecord{VM: vm.Name, State: "initializing"},
	}
	lease.Self = types.ManagedObjectReference{Type: "HttpNfcLease", Value: id}
	lease.State = types.HttpNfcLeaseStateInitializing
	lease.Info = &types.HttpNfcLeaseInfo{Lease: lease.Self, Entity: vm.Self, LeaseTimeout: 300}

	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	var missing []string
	for n, device := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := device.(*types.VirtualDisk)
		backing, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		var where object.DatastorePath
		where.FromString(backing.GetVirtualDeviceFileBackingInfo().FileName)
		file := filepath.Join(e.dir, where.Datastore, filepath.Clean("/"+where.Path))
		st, err := os.Stat(file)
		if e.dir == "" || err != nil {
			missing = append(missing, where.String())
			continue
		}
		name := fmt.Sprintf("disk-%d.vmdk", n)
		lease.files[name] = file
		lease.keys[name] = deviceKey(vm, devices, disk)
		lease.Info.TotalDiskCapacityInKB += disk.CapacityInKB
		lease.Info.DeviceUrl = append(lease.Info.DeviceUrl, types.HttpNfcLeaseDeviceUrl{
			Key:       deviceKey(vm, devices, disk),
			ImportKey: deviceKey(vm, devices, disk),
			Url:       "https://*" + nfcPath + id + "/" + name,
			Disk:      types.NewBool(true),
			TargetId:  name,
			FileSize:  st.Size(),
		})
	}

	ctx.Session.Put(lease)
	e.mu.Lock()
	e.leases[id] = lease
	e.mu.Unlock()
	go func() {
		time.Sleep(leaseReady)
		simulator.Map.WithLock(lease, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if len(missing) > 0 {
				msg := "vcsim: no export image for " + strings.Join(missing, ", ")
				lease.State = types.HttpNfcLeaseStateError
				lease.Error = &types.LocalizedMethodFault{
					Fault:            &types.FileNotFound{FileFault: types.FileFault{File: missing[0]}},
					LocalizedMessage: msg,
				}
				lease.record.State = "error"
				log.Printf("lease %s: %s", id, msg)
				return
			}
			lease.State = types.HttpNfcLeaseStateReady
			lease.record.State = "ready"
		})
	}()
	return lease
}

// deviceKey names a disk as vSphere's export leases do: /VM-ID/CONTROLLER-TYPE+BUS:UNIT.
func deviceKey(vm *simulator.VirtualMachine, devices object.VirtualDeviceList, disk *types.VirtualDisk) string {
	controller := devices.FindByKey(disk.ControllerKey)
	kind, bus := "UnknownController", int32(0)
	if controller != nil {
		kind = reflect.TypeOf(controller).Elem().Name()
		if c, ok := controller.(types.BaseVirtualController); ok {
			bus = c.GetVirtualController().BusNumber
		}
	}
	unit := int32(0)
	if disk.UnitNumber != nil {
		unit = *disk.UnitNumber
	}
	return fmt.Sprintf("/%s/%s%d:%d", vm.Self.Value, kind, bus, unit)
}

func (l *exportLease) end(ctx *simulator.Context, state string) {
	ctx.Session.Remove(l.Self)
	l.State = types.HttpNfcLeaseStateDone
	l.owner.mu.Lock()
	l.record.State = state
	l.owner.mu.Unlock()
	log.Printf("lease %s: %s", l.id, state)
}

func (l *exportLease) HttpNfcLeaseComplete(ctx *simulator.Context, req *types.HttpNfcLeaseComplete) soap.HasFault {
	l.end(ctx, "done")
	return &methods.HttpNfcLeaseCompleteBody{Res: new(types.HttpNfcLeaseCompleteResponse)}
}

func (l *exportLease) HttpNfcLeaseAbort(ctx *simulator.Context, req *types.HttpNfcLeaseAbort) soap.HasFault {
	l.end(ctx, "aborted")
	return &methods.HttpNfcLeaseAbortBody{Res: new(types.HttpNfcLeaseAbortResponse)}
}

func (l *exportLease) HttpNfcLeaseProgress(ctx *simulator.Context, req *types.HttpNfcLeaseProgress) soap.HasFault {
	l.TransferProgress = req.Percent
	l.owner.mu.Lock()
	l.record.Progress = req.Percent
	l.record.ProgressCalls++
	l.owner.mu.Unlock()
	return &methods.HttpNfcLeaseProgressBody{Res: new(types.HttpNfcLeaseProgressResponse)}
}

// serveNFC sends a lease's file to the session that made the lease, while the lease is ready.
// No Content-Length: ESXi streams an export without announcing its size.
func (e *exports) serveNFC(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, nfcPath), "/")
	if r.Method != http.MethodGet || len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	e.mu.Lock()
	lease, ok := e.leases[parts[0]]
	ready := ok && lease.record.State == "ready"
	e.mu.Unlock()
	if !ready {
		http.NotFound(w, r)
		return
	}
	cookie, err := r.Cookie(soap.SessionCookieName)
	if err != nil || cookie.Value != lease.session {
		http.Error(w, "not the lease's session", http.StatusForbidden)
		return
	}
	file, ok := lease.files[parts[1]]
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(file)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	n, err := io.Copy(w, f)
	if err == nil {
		e.mu.Lock()
		lease.record.Sent = append(lease.record.Sent, lease.keys[parts[1]])
		e.mu.Unlock()
	}
	log.Printf("lease %s: sent %s: %d bytes (%v)", lease.id, parts[1], n, err)
}

func (e *exports) serveLeases(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	records := make(map[string]leaseRecord, len(e.leases))
	for id, lease := range e.leases {
		records[id] = lease.record
	}
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(records)
}
