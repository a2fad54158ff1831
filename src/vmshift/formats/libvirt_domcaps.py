"""libvirt domain capabilities: what a libvirt host can give a guest of one arch and machine.

`virsh domcapabilities` / virConnectGetDomainCapabilities answers, for one emulator, arch,
machine type and domain type (kvm or qemu), which firmware and CPU models a guest can have
there. vmshift reads two things from it:

    <os><loader><enum name='secure'><value>yes</value>    secure boot firmware is installed
    <cpu><mode name='custom' supported='yes'>
           <model usable='yes'>Westmere</model>            the host can run this model as is

Pure: text in, facts out. The answer comes from a libvirt daemon, so it is parsed like any
other XML from outside (no entities, no DTD, no network).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from vmshift.errors import TargetError
from vmshift.formats.safexml import untrusted_parser


@dataclass(frozen=True)
class DomainCapabilities:
    secure_boot: bool  # a secure-boot UEFI loader is available
    cpu_models: dict[str, bool]  # custom-mode model name -> usable on this host

    def can_run(self, model: str) -> bool:
        return self.cpu_models.get(model, False)


def parse_domain_capabilities(text: str | bytes, where: str) -> DomainCapabilities:
    """Parse <domainCapabilities>; raise TargetError naming `where` if it is not that."""
    parser = untrusted_parser()
    data = text.encode() if isinstance(text, str) else text
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise TargetError(f"{where}: unreadable domain capabilities: {exc}") from None
    if root.tag != "domainCapabilities":
        raise TargetError(f"{where}: not libvirt domain capabilities (<{root.tag}>)")
    os_elem = root.find("os")
    loader = root.find("os/loader")
    secure = (
        os_elem is not None
        and os_elem.get("supported", "yes") == "yes"
        and loader is not None
        and loader.get("supported", "yes") == "yes"
        and "yes" in [v.text for v in loader.iterfind("enum[@name='secure']/value")]
    )
    models: dict[str, bool] = {}
    custom = root.find("cpu/mode[@name='custom']")
    if custom is not None and custom.get("supported") == "yes":
        for model in custom.iterfind("model"):
            name = (model.text or "").strip()
            if name:
                models[name] = model.get("usable") == "yes"
    return DomainCapabilities(secure_boot=secure, cpu_models=models)
