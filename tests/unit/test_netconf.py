from __future__ import annotations

from vmshift.formats import netconf


def test_ifupdown() -> None:
    text = """
# The loopback network interface
auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet static
    address 192.0.2.10/24  # office
iface ens192 inet6 auto
auto ens224 br0
"""
    assert netconf.ifupdown_interfaces(text) == ("lo", "ens192", "ens224", "br0")


def test_netplan() -> None:
    text = """
network:
  version: 2
  ethernets:
    ens160:
      addresses: [192.0.2.5/24]
    nic1:
      match: {macaddress: "00:50:56:aa:bb:cc", name: "eth*"}
      set-name: lan0
  bonds:
    bond0: {interfaces: [ens160]}
"""
    assert netconf.netplan_interfaces(text) == ("ens160", "nic1", "lan0", "eth*", "bond0")


def test_netplan_garbage_gives_nothing() -> None:
    assert netconf.netplan_interfaces("network: [unclosed") == ()
    assert netconf.netplan_interfaces("- just\n- a list\n") == ()


def test_ifcfg_device_and_filename() -> None:
    assert netconf.ifcfg_interfaces('DEVICE="eth0"\nBOOTPROTO=static\n', "ifcfg-eth0") == ("eth0",)
    assert netconf.ifcfg_interfaces("BOOTPROTO='dhcp'\n", "ifcfg-ens192") == ("ens192",)
    assert netconf.ifcfg_hwaddr("HWADDR=00:50:56:AA:BB:CC\n") == "00:50:56:aa:bb:cc"


def test_ifcfg_is_never_evaluated() -> None:
    text = 'DEVICE=$(touch /tmp/pwned)\nNAME="`id`"\n'
    assert netconf.ifcfg_interfaces(text, "ifcfg-x") == ("$(touch",)


def test_nmconnection() -> None:
    text = "[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens192\n\n[ipv4]\nmethod=manual\n"
    assert netconf.nmconnection_interfaces(text) == ("ens192",)
    assert netconf.nmconnection_interfaces("not an ini file") == ()


def test_networkd() -> None:
    text = "[Match]\nName=ens192 eth*\n\n[Network]\nAddress=192.0.2.3/24\n"
    assert netconf.networkd_interfaces(text) == ("ens192", "eth*")
    link = "[Match]\nMACAddress=00:50:56:00:00:01\n[Link]\nName=lan0\n"
    assert netconf.networkd_interfaces(link) == ("lan0",)
