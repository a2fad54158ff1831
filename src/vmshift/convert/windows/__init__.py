"""Windows guest conversion: make a VMware/Xen/Hyper-V/Parallels Windows guest boot on KVM.

The steps run in this order on the system volume mounted read-write (the overlay, never the
source), each in its own module taking the WindowsGuest context (context.py):

    checks     refuse hibernated guests; warn about BitLocker, dynamic disks, policies
    services   disable other hypervisors' drivers and services that break boot on KVM
    drivers    copy the VirtIO drivers in, register the boot disk driver, DevicePath
    uefi       make sure the removable-media fallback loader exists on the ESP
    firstboot  install the service that runs the queued scripts once at first boot

The registry is edited through hivex on copies of the hives, uploaded back after the last step.
"""
