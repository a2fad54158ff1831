"""Sources: where a guest comes from (-i). Each module holds one; SOURCES maps -i names."""

from __future__ import annotations

# -i NAME -> "module:Class". Imported lazily so a broken optional source cannot break others.
SOURCES: dict[str, str] = {
    "disk": "vmshift.sources.disk:DiskSource",
    "vmx": "vmshift.sources.vmx:VmxSource",
    "ova": "vmshift.sources.ova:OvaSource",
    "libvirtxml": "vmshift.sources.libvirtxml:LibvirtXmlSource",
    "libvirt": "vmshift.sources.libvirt:LibvirtSource",
    # -i libvirt with -ic esx://... or vpx://... (virt-v2v's spelling) picks this one.
    "vsphere": "vmshift.sources.vsphere:VsphereSource",
    # -i p2v REQUEST.json: what `vmshift p2v-server` runs for a P2V client (sources/p2v.py).
    "p2v": "vmshift.sources.p2v:P2VSource",
}
