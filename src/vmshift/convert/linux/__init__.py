"""Linux guest conversion: make a VMware/Xen/Hyper-V/VirtualBox Linux guest boot on KVM.

The steps run in this order on the guest mounted read-write (the overlay, never the source):

    tools_removal  remove other hypervisors' software (packages, tarball installs, repos)
    kernel         choose the kernel that will boot, one that can drive virtio
    devices        rename block devices (sdX/hdX/xvdX -> vdX, or UUID=) everywhere
    consoles       hvc0/xvc0 -> ttyS0; X drivers
    network        keep interface names working when the NIC model changes
    initramfs      rebuild its initramfs with the virtio drivers (guest's own tool); after
                   devices and network, because the initramfs copies lvm.conf, resume=,
                   .link files and udev rules
    bootloader     default kernel, regenerate grub config (picks up command-line edits)
    finish         SELinux relabel, stale caches

Each step lives in its own module, takes the LinuxGuest context and records what it changed
(tools_removal's text edits, pure functions, are in tools_text).
"""

from __future__ import annotations

from vmshift.convert.linux.converter import LinuxConverter

__all__ = ["LinuxConverter"]
