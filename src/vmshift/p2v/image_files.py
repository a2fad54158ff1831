"""The files of the P2V boot image that are ours, not Debian's: /init, the DHCP client's
script, the power-off wrappers, the `vmshift-p2v` command, /etc, and GRUB's menu.

/init is a shell script, not systemd: the image is one initramfs that never switches root,
so PID 1 has only a dozen things to do in a fixed order (mount the kernel filesystems, load
the drivers the hardware asks for, DHCP on the first NIC with a link, start the client). A
script does that in under a second and a few kilobytes; systemd and udev would add about
15 MB to the image and their own boot time, which counts under TCG. The kernel creates the
device nodes (devtmpfs) and modules are loaded by each device's modalias from /sys, which is
what udev would have done for a system that never hotplugs anything it needs.

`poweroff -f` and `reboot -f` (vmshift-p2v's p2v.post) are busybox's, which call reboot(2)
at once whatever PID 1 is; the wrappers first give init's copies of the log a moment to reach
the consoles (a serial line is slow, and the machine is gone the instant reboot(2) returns).
"""

from __future__ import annotations

from collections.abc import Sequence

IDENTITY = "/etc/vmshift-p2v/id"  # where --inject-ssh-identity puts the key
UDHCPC_SCRIPT = "/etc/vmshift-p2v/udhcpc.script"
LOG = "/run/vmshift-p2v.log"  # the unattended run's log, also on the consoles

INIT = r"""#!/bin/sh
# vmshift P2V boot image: PID 1 (written by `vmshift p2v-image`).
export PATH=/usr/sbin:/usr/bin HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
CMDLINE=" $(cat /proc/cmdline) "

# The consoles: tty1, and each serial line named by console=; the last console= is the one
# the UI runs on (the kernel's preferred console), tty1 without any.
CONSOLES=tty1
PRIMARY=tty1
for word in $CMDLINE; do
    case "$word" in
    console=tty[0-9]*) PRIMARY=tty1 ;;
    console=*)
        dev=${word#console=}
        dev=${dev%%,*}
        [ -e "/dev/$dev" ] && CONSOLES="$CONSOLES $dev" && PRIMARY=$dev ;;
    esac
done
say() {
    for c in $CONSOLES; do echo "vmshift-p2v-init: $*" >"/dev/$c"; done 2>/dev/null
}
option() {  # the value of a p2v.NAME= word of the kernel command line
    for word in $CMDLINE; do
        case "$word" in "p2v.$1="*) echo "${word#p2v.$1=}"; return ;; esac
    done
}
say "vmshift P2V image, kernel $(uname -r)"

# Drivers: what each device's modalias asks for, until a round loads nothing new (a disk
# controller's disks, a USB controller's devices appear only once its driver is in).
loaded=-1
for round in 1 2 3 4 5 6 7 8; do
    find /sys/devices -name modalias -type f -print0 | xargs -0 cat 2>/dev/null | sort -u |
        xargs modprobe -q -a 2>/dev/null
    count=$(wc -l </proc/modules)
    [ "$count" = "$loaded" ] && break
    loaded=$count
    sleep 1
done
# loop for losetup (the used-data maps): no device asks for it, and without udev's static
# nodes there is no /dev/loop-control to load it on first use.
modprobe -q loop
say "drivers loaded: $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
# A disk p2v.disks= names by its kernel name may still be probing (USB, a slow controller).
for disk in $(option disks | tr ',' ' '); do
    case "$disk" in /*) continue ;; esac
    waited=0
    while [ ! -e "/sys/class/block/$disk" ] && [ $waited -lt 30 ]; do
        sleep 1; waited=$((waited + 1))
    done
    [ -e "/sys/class/block/$disk" ] || say "no disk $disk (p2v.disks=)"
done

# Network: DHCP on the first NIC with a link.
ip link set lo up
nics=""
for dev in /sys/class/net/*; do
    [ -e "$dev/device" ] || continue
    nics="$nics ${dev##*/}"
    ip link set "${dev##*/}" up 2>/dev/null
done
nic=""
waited=0
while [ -n "$nics" ] && [ -z "$nic" ] && [ $waited -lt 20 ]; do
    for n in $nics; do
        if [ "$(cat /sys/class/net/$n/carrier 2>/dev/null)" = 1 ]; then nic=$n; break; fi
    done
    [ -n "$nic" ] || { sleep 1; waited=$((waited + 1)); }
done
mac=$(cat /sys/class/net/${nic:-${nics# }}/address 2>/dev/null | tr -d ':')
hostname "p2v-${mac:-localhost}"
if [ -n "$nic" ]; then
    say "DHCP on $nic"
    # In the background once it has a lease (it renews it), or after 10 tries without.
    udhcpc -i "$nic" -s __UDHCPC__ -t 10 -T 3 -b >/dev/null 2>&1
    say "$nic: $(ip -4 -o addr show dev "$nic" | sed -n 's/.* inet \([^ ]*\).*/\1/p')"
else
    say "no network: no NIC has a link (${nics:-no NIC})"
fi

shell() {  # a shell on a console, again whenever it ends
    while :; do setsid -c -w sh -l <>"/dev/$1" >&0 2>&1; done
}
[ -e /dev/tty2 ] && [ "$PRIMARY" != tty2 ] && shell tty2 &

case "$CMDLINE" in
*" p2v.server="*)
    say "unattended: vmshift-p2v (its log: __LOG__)"
    outputs=""
    for c in $CONSOLES; do outputs="$outputs /dev/$c"; done
    vmshift-p2v </dev/null 2>&1 | tee __LOG__ $outputs >/dev/null
    say "vmshift-p2v has ended; a shell follows"
    shell "$PRIMARY"
    ;;
*)
    dmesg -n 1
    export TERM=linux
    case "$PRIMARY" in tty[0-9]*) ;; *) TERM=vt220 ;; esac
    while :; do
        setsid -c -w vmshift-p2v <>"/dev/$PRIMARY" >&0 2>&1
        echo "vmshift-p2v has ended; 'exit' starts it again" >"/dev/$PRIMARY"
        setsid -c -w sh -l <>"/dev/$PRIMARY" >&0 2>&1
    done
    ;;
esac
"""

UDHCPC = r"""#!/bin/sh
# busybox udhcpc's script (vmshift P2V image): configure $interface from the lease.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    [ -n "$hostname" ] && hostname "$hostname"
    ;;
esac
exit 0
"""

# vmshift-p2v's p2v.post runs `poweroff -f` or `reboot -f`.
POWER = """#!/bin/sh
# {name} (vmshift P2V image): let the log reach the consoles, then busybox {name}.
sleep 2
exec busybox {name} "$@"
"""

CLIENT = """#!/usr/bin/python3
import sys

from vmshift.p2v.main import main

sys.exit(main())
"""

ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "",
    "etc/profile": 'export PATH=/usr/sbin:/usr/bin HOME=/root LANG=C.UTF-8\nPS1="p2v# "\n',
}


def init_script() -> str:
    return INIT.replace("__UDHCPC__", UDHCPC_SCRIPT).replace("__LOG__", LOG)


def power_script(name: str) -> str:
    return POWER.format(name=name)


def _grub_word(word: str) -> str:
    """word quoted for grub.cfg (single quotes: no variable expansion in it)."""
    return "'" + word.replace("'", "'\\''") + "'"


def grub_cfg(words: Sequence[str]) -> str:
    """GRUB's menu: the image with the given kernel command line words, on the screen and the
    serial line alike; a second entry adds the serial console."""
    extra = " ".join(_grub_word(w) for w in words)
    serial = "console=tty0 console=ttyS0,115200"
    entries = [("vmshift P2V", extra), ("vmshift P2V, console on ttyS0", f"{serial} {extra}")]
    lines = [
        "set timeout=3",
        "set default=0",
        "if serial --unit=0 --speed=115200; then",
        "    terminal_input --append serial",
        "    terminal_output --append serial",
        "fi",
        "insmod all_video",
    ]
    for title, args in entries:
        lines += [
            f'menuentry "{title}" {{',
            f"    linux /boot/vmlinuz {args}".rstrip(),
            "    initrd /boot/initrd.img",
            "}",
        ]
    return "\n".join(lines) + "\n"
