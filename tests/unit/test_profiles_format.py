"""The profile parsers: the seed's /etc/virt-v2v.conf XML and vmshift's TOML, good files and
every malformed case with the FILE:LINE message a user gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmshift.formats.profiles import (
    NetworkRule,
    Profile,
    ProfileError,
    parse_profile_file,
    parse_toml,
    parse_xml,
)

XML_PATH = Path("/etc/virt-v2v.conf")
TOML_PATH = Path("/home/u/.config/vmshift/profiles.toml")

# A configuration as the seed shipped it: software paths, apps and capabilities it used for
# conversion (ignored here), a top-level mapping, and two profiles.
SEED_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<virt-v2v>
  <path-root>/var/lib/virt-v2v/software</path-root>
  <iso-path>/var/lib/virt-v2v/transfer.iso</iso-path>
  <app os="rhel" major="5" arch="x86_64" name="kernel">
    <path>rhel/5/kernel-2.6.18-128.el5.x86_64.rpm</path>
    <dep>ecryptfs-utils</dep>
  </app>
  <capability os="linux" distro="rhel" major="5" name="virtio">
    <dep name="kernel" minversion="2.6.18-128.el5"/>
  </capability>
  <!-- Xen guests bridged to xenbr1 go to the local network "default" -->
  <network type="bridge" name="xenbr1">
    <network type="network" name="default"/>
  </network>
  <profile name="myrhev">
    <method>rhev</method>
    <storage format="raw" allocation="sparse">nfs.example.com:/export/domain</storage>
    <network type="default">
      <network type="network" name="rhevm"/>
    </network>
    <network type="network" name="VM Network">
      <network type="bridge" name="br-prod"/>
    </network>
  </profile>
  <profile name="kvm1">
    <method>libvirt</method>
    <storage>default</storage>
    <network type="bridge" name="xenbr1">
      <network type="network" name="green"/>
    </network>
  </profile>
</virt-v2v>
"""


def test_seed_xml() -> None:
    f = parse_xml(SEED_XML, XML_PATH)
    assert f.kind == "xml"
    top = NetworkRule("xenbr1", "network", "default", "bridge", 13)
    assert f.profiles == (
        Profile(
            name="myrhev",
            method="rhev",
            output="rhv",
            storage="nfs.example.com:/export/domain",
            path=XML_PATH,
            line=16,
            format="raw",
            allocation="sparse",
            networks=(
                NetworkRule(None, "network", "rhevm", None, 19),
                NetworkRule("VM Network", "bridge", "br-prod", "network", 22),
            ),
            file_networks=(top,),
        ),
        Profile(
            name="kvm1",
            method="libvirt",
            output="libvirt",
            storage="default",
            path=XML_PATH,
            line=26,
            networks=(NetworkRule("xenbr1", "network", "green", "bridge", 29),),
            file_networks=(top,),
        ),
    )
    assert f.profiles[0].origin == "/etc/virt-v2v.conf:16"


def test_profile_mappings_win_over_top_level_ones_but_not_over_a_specific_one() -> None:
    myrhev, kvm1 = parse_xml(SEED_XML, XML_PATH).profiles
    # myrhev's default does not hide the top-level xenbr1 rule: a specific rule is not a default.
    assert {r.source: (r.out_type, r.out_name) for r in myrhev.effective_networks()} == {
        "xenbr1": ("network", "default"),
        None: ("network", "rhevm"),
        "VM Network": ("bridge", "br-prod"),
    }
    # kvm1's own xenbr1 rule replaces the top-level one.
    assert [(r.source, r.out_name) for r in kvm1.effective_networks()] == [("xenbr1", "green")]


def test_xml_with_no_profiles_and_other_methods() -> None:
    assert parse_xml(b"<virt-v2v><path-root>/x</path-root></virt-v2v>", XML_PATH).profiles == ()
    text = b"""<virt-v2v>
  <profile name=" spaced "><method> null </method></profile>
  <profile name="q"><method>qemu</method><storage> /var/tmp/out
  </storage></profile>
</virt-v2v>"""
    null, qemu = parse_xml(text, XML_PATH).profiles
    assert (null.name, null.output, null.storage) == ("spaced", "null", None)
    assert (qemu.output, qemu.storage) == ("qemu", "/var/tmp/out")


SEED_TOML = b"""# vmshift profiles
[[map]]                       # for every profile of this file
source = "xenbr1"
source-type = "bridge"
network = "default"

[profile.myrhev]
method = "rhev"
storage = "nfs.example.com:/export/domain"
format = "qcow2"
allocation = "sparse"
rhv-data-domain-type = "iscsi"
default-network = "rhevm"

[[profile.myrhev.map]]
source = "VM Network"
bridge = "br-prod"

[profile."local disks"]
method = "local"
storage = "/var/tmp/out"
default-bridge = "br0"

[profile.lab]
method = "libvirt"
storage = "vmpool"
conn = "qemu+ssh://root@kvm1/system"
"""


def test_toml() -> None:
    f = parse_toml(SEED_TOML, TOML_PATH)
    assert f.kind == "toml"
    top = NetworkRule("xenbr1", "network", "default", "bridge", 2)
    assert f.profiles == (
        Profile(
            name="myrhev",
            method="rhev",
            output="rhv",
            storage="nfs.example.com:/export/domain",
            path=TOML_PATH,
            line=7,
            format="qcow2",
            allocation="sparse",
            rhv_data_domain_type="iscsi",
            networks=(
                NetworkRule("VM Network", "bridge", "br-prod", None, 15),
                NetworkRule(None, "network", "rhevm", None, 13),
            ),
            file_networks=(top,),
        ),
        Profile(
            name="local disks",
            method="local",
            output="local",
            storage="/var/tmp/out",
            path=TOML_PATH,
            line=19,
            networks=(NetworkRule(None, "bridge", "br0", None, 22),),
            file_networks=(top,),
        ),
        Profile(
            name="lab",
            method="libvirt",
            output="libvirt",
            storage="vmpool",
            path=TOML_PATH,
            line=24,
            conn="qemu+ssh://root@kvm1/system",
            file_networks=(top,),
        ),
    )


def test_toml_profile_written_as_dotted_keys() -> None:
    text = b'[profile]\nq.method = "qemu"\nq.storage = "/srv"\n'
    (q,) = parse_toml(text, TOML_PATH).profiles
    assert (q.name, q.output, q.storage, q.line) == ("q", "qemu", "/srv", 2)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("virt-v2v.conf", SEED_XML, "xml"),
        ("profiles.toml", SEED_TOML, "toml"),
        ("site.conf", SEED_TOML, "toml"),  # no '<' first: TOML
        ("site.conf", b"\n\n  " + SEED_XML.split(b"\n", 1)[1], "xml"),
        ("weird.xml", SEED_XML, "xml"),
    ],
)
def test_format_by_extension_then_content(name: str, data: bytes, kind: str) -> None:
    f = parse_profile_file(data, Path("/x") / name)
    assert f.kind == kind
    assert f.profiles[0].name == "myrhev"


def test_a_toml_extension_is_not_sniffed() -> None:
    with pytest.raises(ProfileError, match=r"^/x/p\.toml:1: TOML syntax error"):
        parse_profile_file(SEED_XML, Path("/x/p.toml"))


def _xml(body: str) -> bytes:
    """A file whose line 2 is the first line of body."""
    return f"<virt-v2v>\n{body}\n</virt-v2v>\n".encode()


_P = '<profile name="p">'
BAD_XML = [
    (
        b'<virt-v2v>\n  <profile name="a">\n    <method>rhev</method>\n'
        b"    <storage>x\n  </profile>\n</virt-v2v>\n",
        "5: not well-formed XML: Opening and ending tag mismatch: storage line 4 and profile",
    ),
    (b'<virt-v2v>\n  <profile name="a">\n', "3: not well-formed XML: Premature end of data"),
    (b"<?xml version='1.0'?>\n<config/>\n", "2: root element is <config>, expected <virt-v2v>"),
    (
        b'<!DOCTYPE v [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<virt-v2v/>',
        "1: declares XML entities; vmshift does not expand them",
    ),
    (_xml("<profile>\n<method>rhev</method></profile>"), "2: <profile> without a name attribute"),
    (_xml('<profile name="  ">\n</profile>'), "2: <profile> without a name attribute"),
    (_xml(f"{_P}\n<storage>x</storage>\n</profile>"), "2: profile 'p': no <method> (rhev or"),
    (
        _xml(f"{_P}\n<storage>x</storage>\n<method>vmware</method></profile>"),
        "4: profile 'p': method 'vmware' is not one of rhev, rhv, ovirt, libvirt, local, disk,",
    ),
    (
        _xml(f"{_P}\n<method>rhev</method>\n<method>libvirt</method></profile>"),
        "4: profile 'p': more than one <method> element",
    ),
    (_xml(f"{_P}<method>rhev</method>\n</profile>"), "2: profile 'p': no <storage> (the -os of"),
    (_xml(f"{_P}<method>rhev</method>\n<storage/></profile>"), "3: profile 'p': no <storage>"),
    (
        _xml(f'{_P}<method>rhev</method>\n\n<storage format="vmdk">x</storage></profile>'),
        "4: profile 'p': storage format 'vmdk' is not one of raw, qcow2",
    ),
    (
        _xml(f'{_P}<method>rhev</method>\n<storage allocation="thin">x</storage></profile>'),
        "3: profile 'p': storage allocation 'thin' is not one of sparse, preallocated",
    ),
    (
        _xml('<network name="a"><network type="network" name="b"/></network>'),
        "2: <network> without a type attribute (default, network, bridge)",
    ),
    (
        _xml('\n<network type="vlan" name="a"><network type="network" name="b"/></network>'),
        "3: <network>: source type 'vlan' is not one of default, network, bridge",
    ),
    (
        _xml('<network type="bridge"><network type="network" name="b"/></network>'),
        '2: <network type="bridge"> without a name attribute',
    ),
    (
        _xml('<network type="bridge" name="xenbr0"></network>'),
        "2: <network> for xenbr0 must hold exactly one",
    ),
    (
        _xml(
            '<network type="default">\n<network type="network" name="a"/>\n'
            '<network type="network" name="b"/></network>'
        ),
        "2: <network> for default must hold exactly one",
    ),
    (
        _xml('<network type="bridge" name="x">\n<network type="vswitch" name="b"/></network>'),
        "3: <network>: target type 'vswitch' is not one of network, bridge",
    ),
    (
        _xml('<network type="bridge" name="x">\n<network type="bridge"/></network>'),
        "3: target <network> without a name attribute",
    ),
    (
        _xml(
            f"{_P}<method>libvirt</method><storage>default</storage>\n"
            '<network type="bridge" name="x"><network type="network" name="a"/></network>\n'
            '<network type="network" name="x"><network type="network" name="b"/></network>\n'
            "</profile>"
        ),
        "4: profile 'p': network 'x' is already mapped at line 3",
    ),
    (
        _xml(
            '<network type="default"><network type="network" name="a"/></network>\n'
            '<network type="default"><network type="bridge" name="b"/></network>'
        ),
        "3: top-level mappings: the default network is already mapped at line 2",
    ),
    (
        _xml(
            f"{_P}<method>libvirt</method><storage>default</storage></profile>\n"
            f"{_P}<method>rhev</method><storage>x</storage></profile>"
        ),
        "3: profile 'p' is already defined at line 2",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_XML)
def test_malformed_xml(data: bytes, message: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile_file(data, XML_PATH)
    assert str(err.value).startswith(f"{XML_PATH}:{message}"), str(err.value)
    assert err.value.path == XML_PATH


def _toml(body: str) -> bytes:
    """A file whose line 3 is the first line of body."""
    return f"# profiles\n[profile.p]\n{body}\n".encode()


_OK = 'method = "local"\nstorage = "/srv"'
BAD_TOML = [
    (b"# x\n[profile.x\n", "2: TOML syntax error: Expected ']' at the end of a table"),
    (b'[profile.x]\nmethod = "local\n', "2: TOML syntax error: Illegal character"),
    (b"[profile.x]\nmethod = ", "2: TOML syntax error: Invalid value at the end of the file"),
    (
        b'[profile.x]\nmethod="local"\nstorage="/a"\n[profile.x]\n',
        "4: TOML syntax error: Cannot declare ('profile', 'x') twice",
    ),
    (b"\xff\xfe\n", "1: not UTF-8 text, as TOML must be"),
    (b"[profile.x]\n# \xe9t\xe9\n", "2: not UTF-8 text"),
    (b'\n[profiles.x]\nmethod = "local"\n', "2: unknown key 'profiles'; expected [profile.NAME]"),
    (b"profile = 3\n", "1: 'profile' must be a table of profiles"),
    (b"[profile]\nx = 3\n", "2: profile 'x' must be a table ([profile.x])"),
    (b'[profile.""]\nmethod = "local"\n', "1: a profile without a name"),
    (_toml('storage = "/srv"'), "2: profile 'p': no method (rhev, libvirt, local, qemu, null)"),
    (_toml('storage = "/srv"\nmethod = "vmware"'), "4: profile 'p': method 'vmware' is not one"),
    (_toml('method = "rhev"'), "2: profile 'p': no storage (the -os of method rhev)"),
    (_toml(f'{_OK}\nformat = "vmdk"'), "5: profile 'p': format 'vmdk' is not one of raw, qcow2"),
    (_toml(f"{_OK}\nformat = 2"), "5: profile 'p': format must be a non-empty string"),
    (_toml(f'{_OK}\nstorage_ = ""'), "5: profile 'p': unknown key 'storage_'; expected method,"),
    (
        _toml(f'{_OK}\n\nallocation = "thin"'),
        "6: profile 'p': allocation 'thin' is not one of sparse, preallocated",
    ),
    (
        _toml(f'{_OK}\nrhv-data-domain-type = "ceph"'),
        "5: profile 'p': rhv-data-domain-type 'ceph' is not one of nfs, iscsi, fc",
    ),
    (_toml(f'{_OK}\ndefault-network = ""'), "5: profile 'p': default-network must be a non-empty"),
    (
        _toml(f'{_OK}\ndefault-network = "a"\ndefault-bridge = "b"'),
        "6: profile 'p': default-network and default-bridge both set",
    ),
    (_toml(f"{_OK}\nmap = 3"), "5: profile 'p': map must be [[...map]] tables"),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nnetwork = "a"'),
        "5: profile 'p': map entry without a source",
    ),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nsource = "a"\nnetwork = "b"\nbridge = "c"'),
        "5: profile 'p': map entry for 'a' needs exactly one of network",
    ),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nsource = "a"\n[[profile.p.map]]\nsource = "b"'),
        "5: profile 'p': map entry for 'a' needs exactly one",
    ),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nsource = "a"\nbridge = "b"\nsrc-type = "c"'),
        "5: profile 'p': map entry: unknown key 'src-type'; expected source, source-type,",
    ),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nsource = "a"\nbridge = "b"\nsource-type = "vlan"'),
        "5: profile 'p': map entry: source-type 'vlan' is not one of network, bridge",
    ),
    (
        _toml(f'{_OK}\n[[profile.p.map]]\nsource = "a"\nbridge = 1'),
        "5: profile 'p': map entry: bridge must be a non-empty string",
    ),
    (
        _toml(
            f'{_OK}\n[[profile.p.map]]\nsource = "a"\nbridge = "b"\n'
            '[[profile.p.map]]\nsource = "a"\nnetwork = "c"'
        ),
        "8: profile 'p': network 'a' is already mapped at line 5",
    ),
    (
        b'[[map]]\nsource = "a"\nnetwork = "b"\n[[map]]\nsource = "c"\n',
        "4: top-level [[map]]: map entry for 'c' needs exactly one",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_TOML)
def test_malformed_toml(data: bytes, message: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile_file(data, TOML_PATH)
    assert str(err.value).startswith(f"{TOML_PATH}:{message}"), str(err.value)


def test_far_too_large() -> None:
    with pytest.raises(ProfileError, match=r"^/etc/virt-v2v.conf: \d+ bytes is far too large"):
        parse_profile_file(b" " * (5 << 20), XML_PATH)
