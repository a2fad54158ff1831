"""Keep the guest's network configuration applying when its NICs change model.

The name a NIC gets follows from its hardware and PCI address: vmxnet3 in VMware's slot 192 is
`ens192`, the virtio-net NIC the converted guest gets is `enp1s0`. Static configurations name the
interface, so they would stop applying. The target keeps each NIC's MAC address, so the step
binds every configured name to the MAC of the source NIC that carried it:

- systemd 240 and later: /etc/systemd/network/10-vmshift-NAME.link ([Match] MACAddress,
  [Link] Name), which sorts before 99-default.link and so wins over the predictable-name policy.
- older udev, systemd before 240 included (RHEL 8 has 239): a NAME= rule in
  /etc/udev/rules.d/70-persistent-net.rules. Those versions never rename a NIC that already has
  a name given by userspace, and the initramfs may have named it already (it loads virtio_net
  and runs udev's default naming); a rule's NAME= renames regardless.
- rules in 70-persistent-net.rules that give our MACs other names, or our names to MACs that
  are gone, are commented out: they win over .link files and keep names reserved.

The initramfs: Debian's initramfs-tools copies /etc/systemd/network/*.link and the custom
/etc/udev/rules.d rules into the image, dracut's hostonly images too. When the image was built
before this step ran, it does not have them and names the NIC enp1s0 first; udev in the real
root then renames it (systemd 240+ re-renames without NamePolicy=keep; rules always do) while
nothing has brought it up yet. Running this step before the initramfs rebuild avoids the double
rename.

Which name belongs to which MAC comes from the guest's files where they pair them (ifcfg
HWADDR, NetworkManager mac-address, netplan match, udev rules), then from the order: configured
names in the order inspection found them, NICs in the order the source lists them. A NIC
without a known MAC (the target will invent one) cannot be bound: its configurations are
rewritten to the name it is predicted to get instead, with a warning.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterable

from vmshift.convert.linux import netnames, tools_removal
from vmshift.convert.linux.context import LinuxGuest
from vmshift.convert.linux.netnames import Binding, NamePlan
from vmshift.model.inspection import DriverPresence, NetworkConfig

STEP = "network"
LINK_DIR = "/etc/systemd/network"
PERSISTENT_RULES = "/etc/udev/rules.d/70-persistent-net.rules"
UDEVD = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
# Before 240 udev's .link handling keeps a name given earlier (in the initramfs); see above.
LINK_FILES_SINCE = 240
# Where a kernel command line may say net.ifnames=0.
CMDLINE_FILES = (
    "/etc/default/grub",
    "/etc/kernel/cmdline",
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/grub/menu.lst",
    "/boot/grub2/grubenv",
)


def preserve_interface_names(guest: LinuxGuest) -> None:
    """Bind each configured interface name to its NIC's MAC so it survives the new NIC model."""
    linux = guest.os.linux
    if linux is None:
        return
    virtio = guest.kernel is not None and guest.kernel.virtio_net is not DriverPresence.ABSENT
    # The kernel step has decided the buses now; redo the alias rewrite if it decided otherwise
    # than tools_removal assumed (idempotent when it did not).
    tools_removal.rewrite_driver_aliases(guest, virtio=virtio, step=STEP)

    texts = {c.path: guest.read(c.path) or "" for c in linux.network_configs}
    names = _configured_names(linux.network_configs, texts)
    named_macs: dict[str, str] = {}
    for config in linux.network_configs:
        found = netnames.config_macs(config.kind, texts[config.path], _basename(config.path))
        for name, mac in found.items():
            named_macs.setdefault(name, mac)
    rules_text = guest.read(PERSISTENT_RULES)
    rule_macs = {
        r.name: r.mac
        for r in netnames.parse_persistent_net_rules(rules_text or "")
        if r.name and r.mac
    }
    systemd = _uses_link_files(guest)
    ifnames = not _ifnames_disabled(guest)
    nic_macs = [nic.mac for nic in guest.vm.nics]
    plan = netnames.plan_names(
        names,
        named_macs,
        nic_macs,
        rule_macs,
        lambda i: netnames.predict_name(i, virtio=virtio, systemd=systemd, ifnames=ifnames),
    )
    _report_plan(guest, names, plan)

    if systemd:
        for binding in plan.bindings:
            if _is_kernel_name(binding.name) and not ifnames:
                # With net.ifnames=0 the kernel hands out ethN in PCI order, which the target
                # keeps; a .link claiming ethN would only race with it.
                guest.note(STEP, f"{binding.name} keeps its kernel name ({binding.mac})")
                continue
            _write_link(guest, binding, guest.vm.nics[binding.nic].model, virtio)
    if rules_text is not None or (not systemd and plan.bindings):
        _update_persistent_rules(guest, rules_text or "", plan.bindings, add=not systemd)
    _apply_renames(guest, linux.network_configs, texts, plan)


def _configured_names(configs: Iterable[NetworkConfig], texts: dict[str, str]) -> list[str]:
    names: list[str] = []
    for config in configs:
        names.extend(config.interfaces)
        if config.kind == "ifupdown":
            names.extend(netnames.ifupdown_members(texts[config.path]))
    return [n for n in dict.fromkeys(names) if netnames.is_nic_name(n)]


def _report_plan(guest: LinuxGuest, names: list[str], plan: NamePlan) -> None:
    if not names:
        guest.note(STEP, "no interface names in the network configuration: nothing to keep")
        return
    if not guest.vm.nics:
        guest.warn(
            f"the source describes no NICs, so the interface names {', '.join(names)} cannot "
            "be bound to the converted NICs; their configuration may not apply on KVM"
        )
        return
    for name, why in plan.unbound:
        guest.warn(f"interface {name} is not bound to any NIC: {why}")
    for rename in plan.renames:
        if rename.new is None:
            guest.warn(
                f"NIC {rename.nic} has no MAC address in the source and its new name cannot be "
                f"predicted: the configuration of {rename.old} may not apply after conversion"
            )
        else:
            guest.warn(
                f"NIC {rename.nic} has no MAC address in the source: {rename.old} cannot be "
                f"bound to it, its configuration is moved to the predicted name {rename.new}"
            )


def _write_link(guest: LinuxGuest, binding: Binding, model: str, virtio: bool) -> None:
    path = f"{LINK_DIR}/10-vmshift-{binding.name}.link"
    target = "virtio-net" if virtio else "e1000"
    why = f"{binding.name} keeps its name on KVM ({model} -> {target}, MAC {binding.mac})"
    text = netnames.link_file(binding.name, binding.mac, why)
    if guest.read(path) == text:
        return
    guest.g.mkdir_p(LINK_DIR)
    guest.write(path, text, STEP, f"bind {binding.name} to {binding.mac} ({binding.reason})")


def _update_persistent_rules(
    guest: LinuxGuest, text: str, bindings: list[Binding], *, add: bool
) -> None:
    new, disabled = netnames.prune_persistent_rules(text, bindings)
    if add:
        new = netnames.rules_with_bindings(new, bindings)
    if new == text:
        return
    what = []
    if disabled:
        what.append(f"disabled {len(disabled)} conflicting rule(s)")
    if add:
        what.append("bound " + ", ".join(f"{b.name} to {b.mac}" for b in bindings))
    guest.g.mkdir_p(posixpath.dirname(PERSISTENT_RULES))
    guest.write(PERSISTENT_RULES, new, STEP, "; ".join(what))


def _apply_renames(
    guest: LinuxGuest, configs: tuple[NetworkConfig, ...], texts: dict[str, str], plan: NamePlan
) -> None:
    for rename in plan.renames:
        if rename.new is None or rename.new == rename.old:
            continue
        for config in configs:
            text = texts[config.path]
            mentions = rename.old in config.interfaces or (
                config.kind == "ifupdown" and rename.old in netnames.ifupdown_members(text)
            )
            if not mentions:
                continue
            new = netnames.rename_interface(text, rename.old, rename.new)
            new = netnames.drop_mac_match(config.kind, new, rename.new)
            if new == text:
                continue
            path = config.path
            if config.kind in ("ifcfg", "wicked") and _basename(path) == f"ifcfg-{rename.old}":
                path = f"{posixpath.dirname(path)}/ifcfg-{rename.new}"
            what = f"interface {rename.old} renamed {rename.new}"
            tools_removal.write_config(guest, path, new, STEP, what, original=config.path)
            texts[config.path] = new


def _uses_link_files(guest: LinuxGuest) -> bool:
    """True for systemd 240 and later (or a systemd-udevd of unknown version), else rules."""
    version = netnames.systemd_version((a.name, a.version) for a in guest.os.applications)
    if version is not None:
        return version >= LINK_FILES_SINCE
    return any(guest.g.is_file(p, followsymlinks=True) for p in UDEVD)


def _ifnames_disabled(guest: LinuxGuest) -> bool:
    paths = list(CMDLINE_FILES)
    with contextlib.suppress(RuntimeError):
        paths += sorted(guest.g.glob_expand("/boot/loader/entries/*.conf"))
    return any(netnames.ifnames_disabled(guest.read(p) or "") for p in paths)


def _is_kernel_name(name: str) -> bool:
    return name.startswith("eth") and name[3:].isdigit()


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]
