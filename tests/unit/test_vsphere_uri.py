"""virt-v2v's esx:// and vpx:// -ic URIs, and how -i libvirt picks the vSphere source."""

from __future__ import annotations

import pytest

from vmshift.cli import mode_options
from vmshift.cli.main import build_parser
from vmshift.errors import UsageError
from vmshift.model.vm import Controller
from vmshift.sources.vsphere_meta import VsphereDisk, datastore_path
from vmshift.sources.vsphere_uri import VsphereUri, is_vsphere_uri, parse_vsphere_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("esx://esxi1.example.com/", VsphereUri("esx", "root", "esxi1.example.com", 443, False)),
        (
            "esx://admin@10.0.0.5:8443/?no_verify=1",
            VsphereUri("esx", "admin", "10.0.0.5", 8443, True),
        ),
        (
            "vpx://administrator%40vsphere.local@vc/DC1/Cluster%201/esxi1?no_verify=1",
            VsphereUri(
                "vpx", "administrator@vsphere.local", "vc", 443, True, "DC1", "Cluster 1", "esxi1"
            ),
        ),
        (
            "vpx://vc/DC1/esxi1",
            VsphereUri(
                "vpx", "administrator@vsphere.local", "vc", 443, False, "DC1", None, "esxi1"
            ),
        ),
    ],
)
def test_uris(uri: str, expected: VsphereUri) -> None:
    assert parse_vsphere_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("vpx://vc/DC1", "vpx:// needs the host's place in vCenter"),
        ("esx://h/extra", "esx:// takes no path"),
        ("esx://root:hunter2@h/", "a password in the URI is refused"),
        ("esx:///", "no host"),
        ("esx://h:port/", "the port is not a number"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_vsphere_uri(uri)
    assert message in exc.value.message
    assert "hunter2" not in exc.value.message


def test_libvirt_input_with_a_vsphere_uri_is_the_vsphere_source() -> None:
    args = build_parser().parse_args(["convert", "-ic", "esx://h/", "g"])
    assert is_vsphere_uri(args.input_conn)
    assert mode_options.input_mode(args) == "vsphere"
    assert mode_options.input_options(
        build_parser().parse_args(["convert", "-ic", "esx://h/", "g", "-io", "vddk-thumbprint=AB"])
    ) == {"vddk-thumbprint": "AB"}
    local = build_parser().parse_args(["convert", "-ic", "qemu:///system", "g"])
    assert mode_options.input_mode(local) == "libvirt"


def test_datastore_paths() -> None:
    assert datastore_path("[LocalDS_0] web/web.vmdk") == ("LocalDS_0", "web/web.vmdk")
    with pytest.raises(ValueError):
        datastore_path("web/web.vmdk")
    disk = VsphereDisk("ds", "web/web_1.vmdk", 1 << 30, Controller.SCSI, "pvscsi", 0, 1)
    assert disk.flat_path == "web/web_1-flat.vmdk"
