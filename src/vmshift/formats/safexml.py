"""The one XML parser configuration for documents vmshift did not write (OVF, libvirt XML,
virt-v2v.conf, a daemon's answers): no entities, no DTD, no network, no huge trees; comments
and processing instructions dropped so they never reach an element's text."""

from __future__ import annotations

from lxml import etree


def untrusted_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
