"""P2V: convert a physical machine (issue 13).

The client (`vmshift-p2v`) runs on the physical machine, booted from a live medium: it finds
the hardware (discovery.py), takes its options from the kernel command line, a config file or
its console UI (settings.py, ui.py), serves the chosen disks read-only over NBD with only the
used data marked as data (usedmap.py), and forwards them through one SSH connection to
`vmshift p2v-server` on the conversion server (client.py, server.py), which converts them
with the ordinary pipeline (`vmshift convert -i p2v`, sources/p2v.py).
"""
